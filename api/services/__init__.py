"""The API's services: what the routes do, behind thin routes.

- `apps`, `deployments`: the mutations, each `service(session, caller, ...)`
  run in the request's transaction by `Mutation.run` (api/unit_of_work.py),
  answering with the operations it queues for the app;
- `releases`: what a new deployment rolls out and where its image comes from;
- `cluster`, `pod_logs`: what Kubernetes says about an app (status, pods,
  events, metrics, logs)."""
