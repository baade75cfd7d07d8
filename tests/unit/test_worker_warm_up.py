"""The worker loads, as it starts, what its first deploys would otherwise
load on their way (worker.warm_up): measured in a fresh interpreter, since
this one has imported everything already."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import worker
from conveyor.settings import Settings
lazy = ["httpcore", "kubernetes.client.api.core_v1_api", "kubernetes.client.api.apps_v1_api"]
print([name in sys.modules for name in lazy])
worker.warm_up(Settings(home=sys.argv[1]))
print([name in sys.modules for name in lazy])
"""


def test_warm_up_loads_the_kubernetes_api_classes_and_the_registry_client(tmp_path):
    answer = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True)
    before, after = answer.stdout.strip().splitlines()[-2:]
    assert before == "[False, False, False]", "importing the worker loads them already: warm_up has nothing left to do"
    assert after == "[True, True, True]"


WORKFLOW_CODE = """
import importlib.machinery, importlib.util, sys
import worker, workflows.deploy


def afresh(name):
    # What the sandbox's import does for every workflow run: its own
    # sys.modules has no workflow module, so the finders are asked.
    spec = next(spec for finder in sys.meta_path if (spec := getattr(finder, "find_spec", lambda *a: None)(name, workflows.__path__)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker.keep_workflow_code()
afresh("workflows.deploy")
touched = []
for name in ("source_to_code", "get_data"):
    original = getattr(importlib.machinery.SourceFileLoader, name)

    def spy(self, *args, _original=original, _name=name, **kwargs):
        touched.append(_name)
        return _original(self, *args, **kwargs)

    setattr(importlib.machinery.SourceFileLoader, name, spy)
module = afresh("workflows.deploy")
print(touched, module.DeployWorkflow is not workflows.deploy.DeployWorkflow)
"""


def test_the_sandbox_gets_the_workflow_modules_code_without_compiling_or_reading_them_again():
    # -B: as under PYTHONDONTWRITEBYTECODE, or with the sources on a read-only filesystem.
    answer = subprocess.run([sys.executable, "-B", "-c", WORKFLOW_CODE], capture_output=True, text=True, timeout=120, check=True)
    assert answer.stdout.strip().splitlines()[-1] == "[] True", "workflows/deploy.py was compiled or read again"


TRACING = """
import sys
import urllib3
from conveyor.clients import telemetry
from conveyor.settings import Settings
tracer = telemetry.worker_tracer(Settings(home=sys.argv[1], otlp_endpoint=sys.argv[2] or None))
print(tracer is not None, hasattr(urllib3.HTTPConnectionPool.urlopen, "__wrapped__"), len(telemetry.temporal_interceptors(tracer)))
"""


def test_the_worker_makes_spans_only_when_a_collector_takes_them(tmp_path):
    """Without CONVEYOR_OTLP_ENDPOINT nobody could read the worker's spans:
    no Kubernetes call is wrapped in one, no Temporal interceptor makes them."""

    def traced(endpoint: str) -> str:
        answer = subprocess.run([sys.executable, "-c", TRACING, str(tmp_path), endpoint], capture_output=True, text=True, timeout=120, check=True)
        return answer.stdout.strip().splitlines()[-1]

    assert traced("") == "False False 0"
    assert traced("http://127.0.0.1:4318") == "True True 1"
