"""Clients of the systems Conveyor talks to: the database (`db/`: models,
migrations, sessions, queries, tokens), Kubernetes, the OCI registry,
Temporal with its payload codec, and telemetry. Each is configured from
Settings; none holds a rule of its own (those live in `conveyor.domain`)."""
