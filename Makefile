# `make run` and `make test` bootstrap .venv from pyproject.toml on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck pytest bench soak clean browser promtool postgres postgres-stop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask,postgresql]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/acme_outfitters/run_day.py

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check setup.py engine connectors mappings tests benchmarks examples
	$(BIN)/ruff format --check setup.py engine connectors mappings tests benchmarks examples

# mypy has no notion of setuptools' package-dir, so it checks the packages through links named as installed.
typecheck: $(STAMP)
	mkdir -p .typecheck/shipmap
	ln -sfn ../../engine .typecheck/shipmap/engine
	ln -sfn ../../connectors .typecheck/shipmap/connectors
	$(BIN)/mypy -p shipmap.engine -p shipmap.connectors

pytest: $(STAMP) browser promtool postgres
	$(BIN)/pytest -q

# The studio's tests drive a real headless Chromium from Debian's packages; installed only when absent
# (CI runs as root on a fresh machine).
browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium chromium-driver)

# The alerting rules' tests (tests/examples/test_alerts.py) run promtool, from Debian's prometheus package;
# installed only when absent (33 s here with apt-get update and 12 packages; a fresh machine also downloads
# 22.5 MB). Where systemd runs, the package starts a Prometheus server, which the tests do not use: it is
# stopped and disabled.
promtool:
	@test -x /usr/bin/promtool || (apt-get update && apt-get install -y --no-install-recommends prometheus \
		&& { systemctl disable --now prometheus 2>/dev/null || true; })

# A throwaway PostgreSQL server for the tests (Debian's postgresql package, installed when absent) on a free
# loopback port under /tmp; its URL goes to .postgres-url, which the tests read. Reused while it runs.
postgres:
	.ci/postgres start

postgres-stop:
	.ci/postgres stop

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run_all.py

# The long runs of tests/reliability: 20,000 events through `shipmap run` with faults and with kill -9, then
# `shipmap serve` left running 5 minutes (SQLite, then PostgreSQL: make postgres) under webhook traffic,
# faults and reloads, its RSS, fds and threads watched (SHIPMAP_SERVE_SOAK_SECONDS=900 for 15 minutes);
# docs/guarantees.md, "How it is checked".
soak: $(STAMP)
	$(BIN)/pytest -q -s -m soak tests/reliability

clean:
	rm -rf $(VENV) .typecheck build *.egg-info .pytest_cache .mypy_cache .ruff_cache
