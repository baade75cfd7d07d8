"""Measure the local platform and print the figures.

    uv run python scripts/benchmark.py [--cold-build]

- warm `conveyor up` (every part stopped, binaries cached) until all answer;
- a 3-replica Deployment applied with the kubernetes client until Available;
- an app created through the API until its deployment is active (3 replicas);
- the stack's resident memory, per part and in total;
- with --cold-build: building every binary into an empty cache and Go module
  cache (takes minutes, needs the Go module proxy).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

import httpx
from kubernetes import client, config

from conveyor.settings import get_settings
from conveyor.stack.platform import Platform, format_bytes


def timed(label: str, fn) -> float:
    started = time.monotonic()
    fn()
    elapsed = time.monotonic() - started
    print(f"{label:<52} {elapsed:8.2f} s", flush=True)
    return elapsed


def wait(check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def deployment_available(settings) -> None:
    api = config.new_client_from_config(config_file=str(settings.effective_kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    labels = {"app": "bench"}
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="bench"),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="127.0.0.1:5000/demo/web:v1")]),
            ),
        ),
    )

    def run():
        apps.create_namespaced_deployment(namespace, body)
        wait(lambda: (apps.read_namespaced_deployment("bench", namespace).status.available_replicas or 0) == 3)

    try:
        timed("3-replica Deployment applied -> Available", run)
    finally:
        core.delete_namespace(namespace)


def api_deploy(settings) -> None:
    token = settings.admin_token_file.read_text().strip()
    http = httpx.Client(base_url=f"{settings.api_url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    holder = {}

    def run():
        app = http.post("/apps", json={"name": f"bench-{uuid.uuid4().hex[:6]}", "image_url": "127.0.0.1:5000/demo/web:v1", "replicas": 3}).json()
        holder["app"] = app

        def active():
            deps = http.get(f"/apps/{app['id']}/deployments").json()
            return deps and deps[0]["status"] == "active"

        wait(active)

    timed("API create -> deployment active (3 replicas)", run)
    http.delete(f"/apps/{holder['app']['id']}")


def cold_build() -> None:
    with tempfile.TemporaryDirectory(prefix="conveyor-cold-") as tmp:
        env = {
            **os.environ,
            "CONVEYOR_CACHE_DIR": f"{tmp}/cache",
            "GOMODCACHE": f"{tmp}/gomod",
            "GOCACHE": f"{tmp}/gocache",
        }
        timed(
            "cold build of every binary (empty caches)",
            lambda: subprocess.run([sys.executable, "-m", "conveyor.cli", "build-binaries"], env=env, check=True),
        )
        subprocess.run(["chmod", "-R", "u+w", tmp], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-build", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    if args.cold_build:
        cold_build()
    platform = Platform(settings, progress=lambda message: None)
    platform.up()
    platform.stop()
    timed("warm `conveyor up` (all parts stopped, binaries cached)", platform.up)
    deployment_available(settings)
    api_deploy(settings)
    time.sleep(2)
    status = platform.status()
    for part in status["parts"]:
        print(f"memory (RSS) {part['title']:<39} {format_bytes(part['rss_bytes']):>10}")
    print(f"memory (RSS) {'whole stack':<39} {format_bytes(status['rss_bytes']):>10}")


if __name__ == "__main__":
    main()
