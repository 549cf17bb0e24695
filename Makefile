# Two commands on a fresh machine:
#   make demo   - install, build the Mars and Earth demo indexes if missing, serve the explorer
#   make test   - install (incl. headless Chromium for the browser tests), run the whole suite
# While working: make test-fast (no browser, no slow tests), make lint (ruff, import layers),
# make test-cpu (the tests whose numbers depend on the processor, with its capabilities printed).
VENV ?= .venv
PY := $(VENV)/bin/python
# Real data for tests and the demo: ../shared/data when it sits beside the checkout.
LOOKALIKE_DATA ?= $(if $(wildcard ../shared/data/mars_8k.jpg),$(abspath ../shared/data),)
export LOOKALIKE_DATA

.PHONY: setup browser test test-fast test-cpu lint lint-imports format wheel-check demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Debian's chromium for the browser tests (playwright drives it; it downloads no browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

# pytest from the venv's own script, so the checkout's folders are never importable as
# top-level packages; then the built wheel is installed and used outside the checkout.
test: setup browser
	$(VENV)/bin/pytest -q
	bash .ci/wheel_check

test-fast: setup
	$(VENV)/bin/pytest -q -m "not browser and not slow"

# -v, not -q: pytest prints the report header (processor, SIMD flags, ONNX Runtime) only then
test-cpu: setup
	$(VENV)/bin/pytest -v -m cpu_dependent

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory lint-imports

# import-linter on the package as it installs (the folders mapped under lookalike/, see
# tests/test_architecture.py), plus the size rule: modules under 600 lines, functions under 80
lint-imports: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_architecture.py

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

wheel-check: setup
	bash .ci/wheel_check

demo: setup
	$(VENV)/bin/lookalike demo --show

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache artifacts
