"""The rules, pure: the words and shapes Conveyor's records, payloads and
workflows share, and the decisions made on them (what a change means, what
objects a release is, when a rollout is done). Nothing here does I/O, so the
workflows, the API and the worker may all import it; `make lint` checks that."""
