"""What the test suites share. Conftest files hold fixtures only; everything a
test module imports comes from here:

- `waiting`: `eventually`, and reading streamed answers (logs, Server-Sent Events).
- `api_client`: the `Api` client (over HTTP or in process), request bodies,
  uploads, and what a refusal must look like (`assert_422_naming`).
- `in_process`: the real API app in this process over a SQLite file, with no
  platform (tests/fast): projects and tokens, row counts, worker stand-ins.
- `workflow_runs`: a worker of the real workflows over faked activities, and
  the plans the workflow tests start (tests/workflows).
- `production`: an API and a worker of their own next to the platform.
- `registry_tags`: moving a tag in the local registry.
- `git_https`: a git server over HTTPS on loopback.
- `hostile_archives`: tarballs an upload must refuse.
- `certificates`: TLS certificates and keys made in the test (`cryptography`).
"""
