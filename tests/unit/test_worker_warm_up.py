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
