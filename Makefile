# `make test` is the README's test command and what CI runs (.ci/run): it installs what the
# tests need on a fresh machine (espeak-ng, chromium and prometheus from Debian, the test extras from PyPI), then lints,
# type-checks and runs the whole suite.
PYTHON ?= python3

.PHONY: test deps lint typecheck pytest

test: deps lint typecheck pytest

deps:
	@command -v espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
	$(PYTHON) -m pip install -q -e ".[test]"

lint:
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest -q
