# Two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install install-test clean browser-deps

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch/torchvision are pinned in pyproject.toml (2.14.1 / 0.29.1, wheels on this machine's disk).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[test]'
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

clean:
	rm -rf runs .pytest_cache
