"""Builds from source end to end: uploaded tarballs and git repositories served
over HTTPS on loopback become images in the registry and running deployments."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from sqlalchemy import update

from conveyor.clients.db.models import Build
from conveyor.clients.db.session import session_scope
from conveyor.clients.kubernetes import namespace_for
from conveyor.domain.ids import utcnow
from conveyor.stack import registry
from tests.support import hostile_archives as hostile
from tests.support.api_client import tarball, upload, upload_app
from tests.support.git_https import GitHttpsServer
from tests.support.waiting import collect_until, eventually, stream_lines


def image_config(settings, image_ref: str) -> dict:
    repository = image_ref.split("/", 1)[1].split(":")[0]
    digest = image_ref.split("@")[1]
    base = registry.url(settings)
    manifest = httpx.get(f"{base}/v2/{repository}/manifests/{digest}", headers={"Accept": registry.MANIFEST_ACCEPT}).json()
    return httpx.get(f"{base}/v2/{repository}/blobs/{manifest['config']['digest']}").json()["config"]


def deployed_image(kube_api, settings, slug: str) -> str:
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment(slug, namespace_for(settings, "proj_default"))
    return dep.spec.template.spec.containers[0].image


def test_tarball_with_a_dockerfile_becomes_a_running_deployment(api, kube_api, settings):
    app = upload_app(api, replicas=2)
    source = {
        "Dockerfile": f"FROM {settings.build_base_image}\nCOPY index.html /www/index.html\nRUN echo compiled > /www/build.txt\n",
        "index.html": "hello from an upload\n",
    }
    dep = upload(api, app["id"], tarball(source)).json()
    assert dep["build_id"].startswith("bld_")
    dep = api.wait_active(app["id"], dep["id"], timeout=180)
    tag = f"proj_default/{app['slug']}"
    assert registry.manifest_digest(settings, tag, dep["build_id"]) == dep["image_digest"]
    assert dep["image_ref"] == f"{settings.registry}/{tag}:{dep['build_id']}@{dep['image_digest']}"
    assert deployed_image(kube_api, settings, app["slug"]) == dep["image_ref"]
    api.wait_ready(app["id"], 2)
    log = api.call("GET", f"/apps/{app['id']}/build-log", 200).text
    assert "building with the source's Dockerfile" in log and "pushed" in log


def test_tarball_without_a_dockerfile_uses_the_default_recipe(api, settings):
    app = upload_app(api, build_command="mkdir -p out && echo built-by-recipe > out/result.txt && cat out/result.txt")
    source = {"Procfile": "web: httpd -f -p 8080 -h /app\n", "index.html": "recipe\n"}
    dep = upload(api, app["id"], tarball(source)).json()
    dep = api.wait_active(app["id"], dep["id"], timeout=180)
    log = api.call("GET", f"/apps/{app['id']}/build-log", 200, params={"build_id": dep["build_id"]}).text
    assert "default recipe" in log and "built-by-recipe" in log
    config = image_config(settings, dep["image_ref"])
    assert config["WorkingDir"] == "/app"
    assert config["Cmd"] == ["/bin/sh", "-c", "httpd -f -p 8080 -h /app"]


@pytest.fixture(scope="module")
def git_server(tmp_path_factory, settings):
    """A bare repository served over HTTPS on loopback (the platform trusts the
    server's certificate through its git CA directory), and a working clone to commit in."""
    base = tmp_path_factory.mktemp("git")
    repos, bare, work = base / "repos", base / "repos" / "app.git", base / "work"
    run = lambda *args, cwd=None: subprocess.run(args, cwd=cwd, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    run("git", "init", "--quiet", "--initial-branch=main", str(work))

    def commit(files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (work / name).write_text(text)
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
        subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
        subprocess.run(["git", "commit", "--quiet", "-m", message], cwd=work, check=True, env=env)
        subprocess.run(["git", "push", "--quiet", str(bare), "main"], cwd=work, check=True, env=env, capture_output=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True, text=True).stdout.strip()

    with GitHttpsServer(repos, base, settings.effective_git_ca_dir) as server:
        url = server.url("app.git")
        trusting = {**os.environ, "GIT_SSL_CAINFO": str(server.cert)}
        eventually(lambda: subprocess.run(["git", "ls-remote", url], capture_output=True, env=trusting).returncode == 0, 20)
        yield url, commit


def test_git_app_deploys_its_branch_head_and_reuses_the_image_of_a_known_commit(api, kube_api, settings, git_server):
    url, commit = git_server
    first_sha = commit({"index.html": "v1\n", "Procfile": "web: httpd -f -p 8080 -h /app\n"}, "first")
    app = api.call(
        "POST", "/apps", 201, json={"name": f"git-{uuid.uuid4().hex[:6]}", "source_type": "git", "repo_url": url, "port": 8080}
    ).json()
    assert app["repo_branch"] == "main"
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"], timeout=180)
    assert first["source_commit"] == first_sha

    second_sha = commit({"index.html": "v2\n"}, "second")
    second = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    second = api.wait_active(app["id"], second["id"], timeout=180)
    assert second["source_commit"] == second_sha and second["image_digest"] != first["image_digest"]
    assert deployed_image(kube_api, settings, app["slug"]) == second["image_ref"]

    again = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    again = api.wait_active(app["id"], again["id"], timeout=120)
    assert again["source_commit"] == second_sha
    assert again["image_ref"] == second["image_ref"], "the same commit reuses the image built for it"
    assert any("reused" in (step["detail"] or "") for step in again["progress"] if step["name"] == "build")


def test_git_app_config_change_after_a_revert_runs_the_reverted_build_without_building(api, kube_api, settings, git_server):
    url, commit = git_server
    first_sha = commit({"index.html": "one\n", "Procfile": "web: httpd -f -p 8080 -h /app\n"}, "one")
    app = api.call(
        "POST", "/apps", 201, json={"name": f"git-{uuid.uuid4().hex[:6]}", "source_type": "git", "repo_url": url, "port": 8080}
    ).json()
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"], timeout=180)
    commit({"index.html": "two\n"}, "two")
    second = api.wait_active(app["id"], api.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"], timeout=180)
    assert second["image_digest"] != first["image_digest"]

    reverted = api.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    api.wait_active(app["id"], reverted["id"])
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"MODE": "after-revert"}})
    update = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert update["operation"] == "update"
    assert update["image_ref"] == first["image_ref"] and update["source_commit"] == first_sha
    assert not [step for step in update["progress"] if step["name"] in ("resolve", "build")], update["progress"]
    assert deployed_image(kube_api, settings, app["slug"]) == first["image_ref"]
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["running_image"] == first["image_ref"]


def test_build_log_follow_streams_lines_before_the_build_ends(api, settings):
    app = upload_app(api)
    source = {"Dockerfile": f"FROM {settings.build_base_image}\nRUN echo step-one && sleep 4 && echo step-two\n"}
    dep = upload(api, app["id"], tarball(source)).json()
    eventually(lambda: api.call("GET", f"/apps/{app['id']}/build-log").status_code == 200, 30)
    sink = stream_lines(api, f"/apps/{app['id']}/build-log", {"follow": "true", "build_id": dep["build_id"]})
    collect_until(sink, lambda lines: any("step-one" in line for line in lines), timeout=60)
    # The first line is here while the build still runs.
    assert api.deployment(app["id"], dep["id"])["status"] == "building"
    lines = collect_until(sink, lambda lines: any("pushed" in line for line in lines), timeout=120)
    assert any("step-two" in line for line in lines)
    api.wait_active(app["id"], dep["id"], timeout=120)


def test_failing_build_leaves_the_app_on_its_previous_deployment(api, kube_api, settings):
    app = upload_app(api)
    good = upload(api, app["id"], tarball({"Dockerfile": f"FROM {settings.build_base_image}\nRUN echo fine\n"})).json()
    good = api.wait_active(app["id"], good["id"], timeout=180)
    bad = upload(api, app["id"], tarball({"Dockerfile": f"FROM {settings.build_base_image}\nRUN echo about-to-fail && exit 3\n"})).json()
    bad = api.wait_finished(app["id"], bad["id"], timeout=180)
    assert bad["status"] == "failed"
    assert "build failed" in bad["reason"] and "about-to-fail" in bad["reason"]
    assert good["id"] in bad["reason"]
    assert api.deployment(app["id"], good["id"])["status"] == "active"
    assert deployed_image(kube_api, settings, app["slug"]) == good["image_ref"]


def test_a_build_cannot_start_from_another_projects_image(api, settings):
    """Each project's built images are its own: a FROM naming another project's
    repository in the platform's registry fails the build at once, before any pull."""
    app = upload_app(api)
    other = f"{settings.registry}/proj_someone-else/their-app:bld_x"
    dep = upload(api, app["id"], tarball({"Dockerfile": f"FROM {other}\nRUN echo copied\n"})).json()
    failed = api.wait_finished(app["id"], dep["id"], timeout=180)
    assert failed["status"] == "failed"
    assert "another project's image" in failed["reason"] and "copied" not in failed["reason"]


def test_a_second_build_of_an_unchanged_source_reuses_its_layers_and_may_start_from_a_shared_image(api, settings):
    """A repository of the platform's registry that belongs to no project
    (`demo/web`) is a base any build may use; the second build of the same
    source runs none of its steps again (buildah's layer cache, kept per app)."""
    app = upload_app(api)
    source = tarball({"Dockerfile": f"FROM {settings.registry}/demo/web:v1\nRUN echo slow-step-$((40+2)) && sleep 3\nRUN echo done > /done\n"})
    logs = []
    for _ in range(2):
        dep = api.wait_active(app["id"], upload(api, app["id"], source).json()["id"], timeout=180)
        logs.append(api.call("GET", f"/apps/{app['id']}/build-log", 200, params={"build_id": dep["build_id"]}).text)
    first, second = logs
    # The step's output (not its command line, which the log shows either way).
    assert "slow-step-42" in first and "layers kept for the next build of this app" in first, first
    assert "layers of this app's last build are here" in second and "Using cache" in second, second
    assert "slow-step-42" not in second, second
    # Another app of the project starts without them.
    other = upload_app(api)
    dep = api.wait_active(other["id"], upload(api, other["id"], source).json()["id"], timeout=180)
    log = api.call("GET", f"/apps/{other['id']}/build-log", 200, params={"build_id": dep["build_id"]}).text
    assert "slow-step-42" in log and "last build are here" not in log


def test_the_layer_cache_is_shared_by_every_worker_through_the_registry(settings, admin_token, tmp_path):
    """Two workers with homes of their own, as on two hosts, one after the
    other on one task queue: the second builds the app's unchanged source
    without running its steps, from the step images the first pushed to the
    app's cache repository; a changed step replaces the earlier chain there."""
    from conveyor.builds.cache import SharedCache, cache_repository
    from conveyor.clients.oci_registry import list_tags
    from tests.support.api_client import Api
    from tests.support.production import api_and_worker, conveyor_env
    from tests.support.registry_tags import point_tag

    queue = f"queue-{uuid.uuid4().hex[:8]}"
    homes = [settings.home / f"worker-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    dockerfile = f"FROM {settings.build_base_image}\nRUN echo slow-step-$((40+2)) && sleep 3\nRUN echo done > /done\n"

    def build(api: Api, app: dict, source: bytes) -> str:
        dep = api.wait_finished(app["id"], upload(api, app["id"], source).json()["id"], timeout=180)
        log = api.call("GET", f"/apps/{app['id']}/build-log", 200, params={"build_id": dep["build_id"]}).text
        assert dep["status"] == "active", (dep["reason"], log)
        return log

    def worker(home: Path, name: str):
        env = conveyor_env(settings, CONVEYOR_HOME=str(home), CONVEYOR_TEMPORAL_TASK_QUEUE=queue)
        (tmp_path / name).mkdir()
        return api_and_worker(settings, env, tmp_path / name)

    try:
        with worker(homes[0], "first") as base_url:
            api = Api(base_url, admin_token, settings.registry)
            app = upload_app(api)
            first = build(api, app, tarball({"Dockerfile": dockerfile}))
        repository = cache_repository("proj_default", app["id"])
        shared = set(list_tags(settings, repository))
        assert "slow-step-42" in first and "step images shared in" in first, first
        # One image per step after FROM (the base is not the app's).
        assert len(shared) == 2 and all(tag.startswith("c-") for tag in shared), (shared, first)
        # A tag that names another image than its own (written by anyone who
        # can push to the registry): the build drops that image, and the tag goes.
        point_tag(settings, repository, "c-" + "0" * 64, "busybox", "conveyor/base")
        with worker(homes[1], "second") as base_url:
            api = Api(base_url, admin_token, settings.registry)
            second = build(api, app, tarball({"Dockerfile": dockerfile}))
            assert "come from the registry" in second and "Using cache" in second, second
            assert "1 images of the registry's cache were not what their tags name" in second, second
            assert "slow-step-42" not in second, second
            assert set(list_tags(settings, repository)) == shared
            # A changed last step: its new image replaces the old one's tag; the rest stay.
            third = build(api, app, tarball({"Dockerfile": dockerfile.replace("echo done", "echo changed")}))
        assert "slow-step-42" not in third, third
        now = set(list_tags(settings, repository))
        assert len(now) == len(shared) and len(now & shared) == len(shared) - 1, (shared, now)
        # The sweep keeps the cache of an app built lately, and deletes it once
        # the app has had no build for CONVEYOR_BUILD_CACHE_DAYS.
        url = settings.effective_database_url
        SharedCache(settings).sweep(url)
        assert set(list_tags(settings, repository)) == now
        with session_scope(url) as session:
            session.execute(update(Build).where(Build.app_id == app["id"]).values(created_at=utcnow() - timedelta(days=settings.build_cache_days + 1)))
        assert SharedCache(settings).sweep(url) >= 1
        assert list_tags(settings, repository) == []
    finally:
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


def test_a_public_base_image_is_pulled_through_a_registry_mirror(settings, admin_token, tmp_path):
    """`FROM docker.io/library/busybox` (and the short `busybox`) with
    CONVEYOR_REGISTRY_MIRRORS pointing docker.io at the local registry: the
    mirror plays docker.io here, where no public registry can be reached."""
    from tests.support.api_client import Api
    from tests.support.production import api_and_worker, conveyor_env
    from tests.support.registry_tags import point_tag

    point_tag(settings, "mirror/docker.io/library/busybox", "latest", "busybox", "conveyor/base")
    env = conveyor_env(settings, CONVEYOR_REGISTRY_MIRRORS=f"docker.io={settings.registry}/mirror/docker.io")
    with api_and_worker(settings, env, tmp_path) as base_url:
        api = Api(base_url, admin_token, settings.registry)
        app = upload_app(api)
        source = tarball({"Dockerfile": "FROM docker.io/library/busybox:latest AS first\nRUN echo from-the-mirror\nFROM busybox\nCOPY --from=first /bin/busybox /bin/busybox\n"})
        dep = api.wait_finished(app["id"], upload(api, app["id"], source).json()["id"], timeout=180)
        log = api.call("GET", f"/apps/{app['id']}/build-log", 200, params={"build_id": dep["build_id"]}).text
        assert dep["status"] == "active", (dep["reason"], log)
        assert f"from the mirror {settings.registry}/mirror/docker.io/library/busybox:latest" in log and "from-the-mirror" in log
        # A registry no rule allows stays refused, naming the setting.
        refused = upload_app(api)
        bad = api.wait_finished(refused["id"], upload(api, refused["id"], tarball({"Dockerfile": "FROM registry.example.internal/x:1\n"})).json()["id"], timeout=120)
        assert bad["status"] == "failed" and "CONVEYOR_BUILD_FROM_REGISTRIES" in bad["reason"]


@pytest.mark.parametrize(
    ("entries", "status", "words"),
    [
        ([("../escape.txt", tarfile.REGTYPE, "")], 400, "climbs out"),
        ([("/abs.txt", tarfile.REGTYPE, "")], 400, "absolute path"),
        ([("link", tarfile.SYMTYPE, "../../../../etc/passwd")], 400, "outside the source tree"),
        ([("dev", tarfile.CHRTYPE, "")], 400, "device"),
    ],
)
def test_malicious_uploads_are_refused_and_start_nothing(api, settings, entries, status, words):
    app = upload_app(api)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            archive.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    before = set((settings.home / "uploads").glob("*")) if (settings.home / "uploads").exists() else set()
    response = upload(api, app["id"], buffer.getvalue(), expect=None)
    assert response.status_code == status and words in response.text and "file" in response.text
    assert api.deployments(app["id"]) == []
    assert set((settings.home / "uploads").glob("*")) == before


HOSTILE_UPLOADS = {
    **{name: build for name, build in hostile.HOSTILE.items()},
    "pax-bomb": lambda _escape: hostile.pax_bomb(),
    "gnu-long-name-bomb": lambda _escape: hostile.gnu_long_name_bomb(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_UPLOADS))
def test_hostile_uploads_are_refused_naming_the_entry(api, settings, tmp_path, name):
    """Each answered 202 before: realpath overflow (CVE-2025-4517), link chains,
    links written through, and a 256 MiB pax header that grew the API by 700 MB."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    workspaces = settings.home / "workspaces"
    # Aimed from where the worker would unpack it: <home>/workspaces/<build>/src.
    data, entry, words, status = HOSTILE_UPLOADS[name](os.path.relpath(sentinel, workspaces / "build" / "src"))
    app = upload_app(api)
    before = set(workspaces.glob("*")) if workspaces.exists() else set()
    response = upload(api, app["id"], data, expect=None)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail.startswith("file: ") and repr(entry) in detail and words in detail
    assert api.deployments(app["id"]) == []
    assert list(sentinel.iterdir()) == []
    assert (set(workspaces.glob("*")) if workspaces.exists() else set()) == before


def test_oversize_and_bomb_uploads_are_413(api, settings):
    app = upload_app(api)
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz") as archive:
        info = tarfile.TarInfo("zeros")
        info.size = settings.upload_max_uncompressed_bytes + 1
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    response = upload(api, app["id"], bomb.getvalue(), expect=None)
    assert response.status_code == 413 and "unpacks to more than" in response.text
    huge = os.urandom(settings.upload_max_bytes + 1024)
    response = upload(api, app["id"], huge, name="huge.tar", expect=None)
    assert response.status_code == 413
    assert api.deployments(app["id"]) == []


SANDBOX_PROBE = """
if wget -q -T 3 -O /tmp/health http://127.0.0.1:{port}/healthz; then echo "probe api=reached"; else echo "probe api=unreachable"; fi
if nc -w 3 127.0.0.1 {temporal} </dev/null >/dev/null 2>&1; then echo "probe temporal=reached"; else echo "probe temporal=unreachable"; fi
echo "probe pid1=$(tr '\\0' ' ' < /proc/1/cmdline)"
if cat /etc/shadow >/dev/null 2>&1; then echo "probe shadow=read"; else echo "probe shadow=denied"; fi
"""


def test_build_steps_cannot_reach_the_api_or_see_the_hosts_processes(api, settings):
    """A RUN step once reached the API on loopback and read the host's /proc/1/cmdline as root."""
    app = upload_app(api)
    source = {
        "probe.sh": SANDBOX_PROBE.format(port=settings.api_port, temporal=settings.temporal_port),
        "Dockerfile": f"FROM {settings.build_base_image}\nCOPY probe.sh /probe.sh\nRUN sh /probe.sh\n",
    }
    # From the host the same probes succeed, so an "unreachable" below is the sandbox's doing.
    assert httpx.get(f"{settings.api_url}/healthz").status_code == 200
    socket.create_connection(("127.0.0.1", settings.temporal_port), timeout=3).close()
    dep = upload(api, app["id"], tarball(source)).json()
    api.wait_active(app["id"], dep["id"], timeout=180)
    log = api.call("GET", f"/apps/{app['id']}/build-log", 200).text
    seen = dict(line.removeprefix("probe ").split("=", 1) for line in log.splitlines() if line.startswith("probe "))
    assert seen["api"] == "unreachable" and seen["temporal"] == "unreachable", log
    host_init = open("/proc/1/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
    assert host_init not in seen["pid1"] and seen["pid1"].startswith("buildah"), log
    assert seen["shadow"] == "denied", "build steps are not root on the host"
    # The network is on by default: outbound only, the host's ports unreachable (above).
    assert "unprivileged user namespace" in log and "outbound network through slirp4netns" in log


def sandbox_processes(build_id: str) -> list[str]:
    """Processes on the host still working for this build (its workspace is in their command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"/workspaces/{build_id}-" in cmdline:
            found.append(cmdline)
    return found


def start_a_long_build(api, settings) -> tuple[dict, dict, str]:
    """An upload app whose build runs a 300 s step, once that step runs: the app, its deployment, its build log's path."""
    app = upload_app(api)
    source = {"Dockerfile": f"FROM {settings.build_base_image}\nRUN echo sleeping-now && sleep 300\n"}
    dep = upload(api, app["id"], tarball(source)).json()
    log_path = f"/apps/{app['id']}/build-log"
    eventually(lambda: "sleeping-now" in api.call("GET", log_path, 200, params={"build_id": dep["build_id"]}).text, 120)
    return app, dep, log_path


def the_build_is_cleaned_up(settings, build_id: str) -> None:
    # The activity cleans up as it learns of the cancel, which may come after the workflow has ended.
    eventually(lambda: sandbox_processes(build_id) == [], 30, what="the build's processes to end")
    eventually(lambda: not list((settings.home / "workspaces").glob(f"{build_id}-*")), 30, what="the workspace to go")


def test_cancelling_a_sandboxed_build_stops_every_process_of_it(api, settings):
    app, dep, log_path = start_a_long_build(api, settings)
    assert sandbox_processes(dep["build_id"]), "the build runs in sandbox processes"
    api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
    dep = api.wait_finished(app["id"], dep["id"], timeout=60)
    assert dep["status"] == "cancelled"
    the_build_is_cleaned_up(settings, dep["build_id"])
    eventually(lambda: "build cancelled" in api.call("GET", log_path, 200, params={"build_id": dep["build_id"]}).text, 30)


def test_env_secrets_never_reach_the_build_log(api, settings):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    app = upload_app(api, env={"API_TOKEN": secret})
    dep = upload(api, app["id"], tarball({"Dockerfile": f"FROM {settings.build_base_image}\nRUN env\n"})).json()
    api.wait_active(app["id"], dep["id"], timeout=180)
    log = api.call("GET", f"/apps/{app['id']}/build-log", 200).text
    assert "PATH=" in log and secret not in log


def test_template_creates_and_deploys_an_app(api, settings):
    templates = api.call("GET", "/templates", 200).json()
    hello = next(t for t in templates if t["id"] == "hello-web")
    app = api.call("POST", "/apps", 201, json={"name": f"tpl-{uuid.uuid4().hex[:6]}", "template_id": "hello-web", "replicas": 1}).json()
    assert app["image_url"] == hello["image_url"] and app["port"] == hello["port"]
    assert app["replicas"] == 1, "an explicit field wins over the template"
    assert app["env"] == hello["env"]
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    api.wait_ready(app["id"], 1)
    unknown = api.call("POST", "/apps", json={"name": "nope", "template_id": "no-such"})
    assert unknown.status_code == 422 and "template_id" in unknown.text


def test_a_delete_during_a_build_stops_it_and_the_app_is_gone_in_seconds(api, settings):
    app, dep, _log = start_a_long_build(api, settings)
    api.call("DELETE", f"/apps/{app['id']}", 202)
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 30, what="the app to be gone")
    the_build_is_cleaned_up(settings, dep["build_id"])
