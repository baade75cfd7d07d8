"""The worker loads, as it starts, what its first deploys would otherwise
load on their way (worker.warm_up): measured in a fresh interpreter, since
this one has imported everything already."""

from __future__ import annotations

import os
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


BYTECODE = """
import importlib.machinery, importlib.util, sys
import worker, workflows
compiled = []
compile_source = importlib.machinery.SourceFileLoader.source_to_code

def spy(self, data, path, *args, **kwargs):
    compiled.append(path)
    return compile_source(self, data, path, *args, **kwargs)

worker.sandbox_bytecode()
importlib.machinery.SourceFileLoader.source_to_code = spy
# What the sandbox does for every workflow run: the module afresh.
spec = importlib.util.find_spec("workflows.deploy")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(compiled)
"""


def test_the_sandbox_imports_the_workflow_modules_from_bytecode_when_python_may_not_write_it():
    # -B: as under PYTHONDONTWRITEBYTECODE, or with the sources on a read-only filesystem.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    answer = subprocess.run([sys.executable, "-B", "-c", BYTECODE], capture_output=True, text=True, timeout=120, check=True, env=env)
    assert answer.stdout.strip().splitlines()[-1] == "[]", "workflows/deploy.py was compiled from source"
