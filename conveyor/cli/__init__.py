"""The `conveyor` command (Click), split by role:

- `main`: the root group, its global options and exit codes (`errors`);
- `operator`: the operator's commands, straight to the database (db upgrade,
  tokens, projects, payload keys);
- `local`: the local platform (up, down, status, build-binaries), the only
  module that imports `conveyor.stack`, loaded only when one of those runs;
- the API client: `client` (requests and their errors), `invocation` (where
  the URL and token come from), `config` (the config file's contexts),
  `output` (table or JSON), `waiting` (progress streams and deadlines),
  `source` (packing a directory), and the commands in `login`, `apps`,
  `deploy`, `env`, `deployments` and `observe`.
"""
