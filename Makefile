# MindBot's single entry point. Both targets install what they need first and are idempotent.
#   make run    serve the assistant at http://localhost:7860 (WebRTC, offline models)
#   make test   lint, then run the whole test suite
# uv comes from PyPI when it is missing (python3 -m pip install --user uv). `make test` also
# installs the Debian packages whose servers the tool tests start (scripts/test-packages.sh).

UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export HF_HUB_OFFLINE := 1

.PHONY: run test setup lint bench test-packages

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --user --quiet uv
	$(UV) sync --locked --extra local

run: setup
	$(UV) run --no-sync mindbot run $(ARGS)

lint: setup
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .

test-packages:
	@bash scripts/test-packages.sh

test: lint test-packages
	$(UV) run --no-sync pytest $(ARGS)

bench: setup
	$(UV) run --no-sync mindbot bench latency $(ARGS)
