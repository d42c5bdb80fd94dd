# Two commands: `make demo` and `make test`. Both create or reuse .venv and install from the lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Every transitive dependency, pinned with hashes for Python 3.11 on Linux x86_64 (`make lock` refreshes).
BASE_LOCK := requirements/base.lock
TEST_LOCK := requirements/test.lock
# The torch-free runtime's environment (the `runtime` extra: onnxruntime, OpenCV, the service), for a line PC.
RUNTIME_LOCK := requirements/runtime.lock
# pip itself is pinned too, so that a clone resolves and installs the same way on any day.
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.7.0
LOCK_VENV := .venv-lock
# The package goes in without build isolation, with the setuptools the lock pins.
INSTALL_SELF := $(PIP) install -qq --no-deps --no-build-isolation -e .

.PHONY: demo test install install-test lock clean browser-deps

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -qq pip==$(PIP_VERSION)

$(STAMP): $(BASE_LOCK) pyproject.toml | $(PY)
	$(PIP) install -qq --require-hashes -r $(BASE_LOCK)
	$(INSTALL_SELF)
	touch $@

$(TEST_STAMP): $(TEST_LOCK) pyproject.toml | $(PY)
	$(PIP) install -qq --require-hashes -r $(TEST_LOCK)
	$(INSTALL_SELF)
	touch $(STAMP) $@

install: $(STAMP)
install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomaly demo --serve

test: $(TEST_STAMP) browser-deps
	$(PY) -m pytest -q

# Headless Chromium + ChromeDriver (Debian packages) for the browser test. Installed only when
# missing, as root with apt-get; never fails the build: without them the browser test skips.
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the browser test ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	    >/dev/null) || echo "browser-deps: could not install chromium; the browser test will be skipped"; \
	else echo "browser-deps: no chromium and no way to install it here; the browser test will be skipped"; fi

# Re-resolve the locks from pyproject.toml's ranges and requirements/pins.in (deliberately, never in CI):
# review the diff, rerun `make test` and the benchmarks whose figures the README cites, then commit.
lock:
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install -qq pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION); }
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra full --output-file $(BASE_LOCK) pyproject.toml
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra full --extra test -c $(BASE_LOCK) --output-file $(TEST_LOCK) pyproject.toml
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra runtime -c $(BASE_LOCK) --output-file $(RUNTIME_LOCK) pyproject.toml

LOCK_FLAGS := --quiet --upgrade --strip-extras --allow-unsafe --generate-hashes --no-emit-index-url \
  --no-emit-find-links -c requirements/pins.in

clean:
	rm -rf runs .pytest_cache
