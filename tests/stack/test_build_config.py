"""Pure parts of the platform set-up: the Go wrapper modules and the KWOK
configuration."""

from __future__ import annotations

import re

import yaml

from conveyor.domain import markers
from conveyor.settings import Settings
from conveyor.stack import binaries, cluster, versions

RELEASE_GO_MOD = """module k8s.io/kubernetes

go 1.24.0

require (
	k8s.io/api v0.0.0
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go // a comment
	github.com/some/fork => github.com/other/fork v1.2.3
)

replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl
"""


def test_local_replaces_are_read_from_the_release_go_mod():
    assert binaries.local_replaces(RELEASE_GO_MOD) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/kubectl"]


def test_wrapper_module_maps_staging_modules_to_published_versions():
    apiserver = next(b for b in binaries.all_binaries() if b.name == "kube-apiserver")
    text = binaries.wrapper_go_mod(apiserver, RELEASE_GO_MOD)
    published = "v0" + versions.KUBERNETES[versions.KUBERNETES.index(".") :]
    assert f"require k8s.io/kubernetes {versions.KUBERNETES}" in text
    assert f"\tk8s.io/api => k8s.io/api {published}" in text
    assert f"\tk8s.io/kubectl => k8s.io/kubectl {published}" in text
    assert "FORBIDDEN" not in text and "some/fork" not in text


def test_every_pin_names_the_cache_directory():
    for pin in (versions.KUBERNETES, versions.ETCD, versions.KWOK, versions.METRICS_SERVER):
        assert pin in versions.cache_key()


def test_kwok_config_renders_every_placeholder(tmp_path):
    settings = Settings(home=tmp_path, pod_ready_delay_ms=1234, node_cpu="6")
    docs = list(yaml.safe_load_all(cluster.render_config(settings)))
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "KwokctlConfiguration"
    assert {"Stage", "ClusterLogs", "ClusterResourceUsage"} <= set(kinds)
    stages = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Stage"}
    assert stages["pod-ready"]["spec"]["delay"]["durationMilliseconds"] == 1234
    assert '"6"' in stages["node-initialize"]["spec"]["next"]["statusTemplate"]
    # The jq selector carries the same regex the markers module uses.
    crash_selector = stages["pod-crash"]["spec"]["selector"]["matchExpressions"][-1]["key"]
    jq_regex = re.search(r'test\("(.*)"\)', crash_selector).group(1).replace("\\\\", "\\")
    assert jq_regex == markers.tag_regex([markers.CRASHLOOP.suffix])


def test_kwok_config_ends_job_pods_by_the_markers_of_their_command(tmp_path):
    settings = Settings(home=tmp_path, pod_job_delay_ms=321, pod_job_slow_delay_ms=4321)
    docs = list(yaml.safe_load_all(cluster.render_config(settings)))
    stages = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Stage"}
    assert stages["pod-job-complete"]["spec"]["delay"]["durationMilliseconds"] == 321
    assert stages["pod-job-slow-complete"]["spec"]["delay"]["durationMilliseconds"] == 4321
    for name, marker in (("pod-job-fail", markers.JOB_FAIL), ("pod-job-slow-complete", markers.JOB_SLOW)):
        selector = stages[name]["spec"]["selector"]["matchExpressions"][-1]["key"]
        assert re.search(r'test\("(.*)"\)', selector).group(1).replace("\\\\", "\\") == markers.command_regex((marker,))
    assert "phase: Failed" in stages["pod-job-fail"]["spec"]["next"]["statusTemplate"]
    [logs] = [d for d in docs if d["kind"] == "ClusterLogs"]
    assert logs["spec"]["logs"][0]["containers"] == ["job"]
    cluster.write_inputs(settings)
    assert cluster.job_logs_file(settings).read_text().count("conveyor job:") == len(cluster.JOB_LOG_LINES)


def test_a_cluster_made_without_the_job_stages_is_named_as_missing_them(tmp_path):
    settings = Settings(home=tmp_path, cluster_name="old")
    assert cluster.missing_stages(settings) == []  # no cluster yet
    made = cluster.cluster_dir(settings) / "kwok.yaml"
    made.parent.mkdir(parents=True)
    current = cluster.render_config(settings)
    made.write_text(current)
    assert cluster.missing_stages(settings) == []
    docs = [d for d in yaml.safe_load_all(current) if not (d.get("kind") == "Stage" and d["metadata"]["name"].startswith("pod-job"))]
    made.write_text(yaml.safe_dump_all(docs))
    assert cluster.missing_stages(settings) == ["pod-job-complete", "pod-job-fail", "pod-job-slow-complete"]
