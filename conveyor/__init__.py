"""Conveyor's core, by role:

- `domain/`: the rules, pure (no I/O): vocabulary, payloads, planning,
  manifests, rollout, images, redaction, markers, errors, ids;
- `clients/`: the other systems: the database (`db/`), Kubernetes, the OCI
  registry, Temporal and its payload codec, telemetry;
- `builds/`: building images from untrusted source: buildah, the sandbox,
  sources, build logs, the recipe, git;
- `cli/`: the `conveyor` command (operator, API client and local-platform commands);
- `stack/`: the local platform (`conveyor up`); the runtime never imports it;
- `settings.py` (one Settings object for every process) and `heap.py`.
"""
