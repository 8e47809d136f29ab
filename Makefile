# Two commands do all set-up: `make demo` and `make test`.
# Both create .venv if it is absent and install the project into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --quiet --disable-pip-version-check
CONFIG ?= configs/demo.yaml
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
QUIET := sed '/^WARNING: Location/d'

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | $(QUIET)
	# CPU build of torch first (on local disk here); the project's range then needs nothing more.
	$(PIP) install torch==2.13.0 2>&1 | $(QUIET)
	$(PIP) install -e '.[dev]' 2>&1 | $(QUIET)
	$(PY) -c "import torch, ray, openslide, ghist_ray" && touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/ghist-ray demo --config $(CONFIG)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Headless Chromium for the summary-page test: Debian's package, installed once.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -y -q
$(CHROMIUM):
	($(APT) install chromium || ($(APT) update && $(APT) install chromium)) >/dev/null

test: lint $(CHROMIUM)
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) demo_out .pytest_cache
