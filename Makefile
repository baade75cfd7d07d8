# Conveyor: `make dev` runs the platform, `make test` passes the tests.
UV ?= uv
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: dev test lint deps sync binaries up down status clean image

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

test: lint binaries
	$(UV) run pytest -ra

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
