# Conveyor: `make dev` runs the platform, `make test` passes the tests.
UV ?= uv
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: dev test test-fast lint deps sync binaries up down status clean image

deps:
	@scripts/system-deps.sh

sync: deps
	$(UV) sync --frozen

binaries: sync
	$(UV) run conveyor build-binaries

# The whole local platform in the foreground; Ctrl-C stops it.
dev: binaries
	$(UV) run conveyor up

# Lint and types first: they take seconds and fail before the stack starts.
lint: sync
	$(UV) run ruff check .
	$(UV) run lint-imports
	$(UV) run mypy

# Everything: the fast suites below, and tests/stack and tests/api on the
# local platform (started if it is not running).
test: lint binaries
	$(UV) run pytest -ra

# What needs no platform, in under a minute: pure rules, the workflows on a
# Temporal dev server of their own, the API in process (and the CLI's tests).
FAST_TESTS = tests/unit tests/workflows tests/fast $(wildcard tests/cli)

test-fast: lint
	$(UV) run pytest -ra -n 4 $(FAST_TESTS)

# The Conveyor image (conveyor/conveyor) on a Debian base made by debootstrap,
# pushed to the local registry and smoke-tested; not part of `make test` (README).
image: binaries
	@scripts/system-deps.sh debootstrap
	scripts/build-image.sh

up: binaries
	$(UV) run conveyor up --detach

down:
	$(UV) run conveyor down

status:
	$(UV) run conveyor status

clean:
	-$(UV) run conveyor down --purge
	rm -rf .conveyor
