"""The `conveyor` command: operator commands (database, tokens, projects,
payload keys), API client commands (apps, deployments, logs), and the local
platform's commands (up, down, status), which alone import `conveyor.stack`."""
