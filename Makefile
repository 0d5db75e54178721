# registry-ops: `make demo` runs the local stack and every DAG once; `make test` runs the tests.
# Both install what they need: apt packages when missing, a venv with pinned requirements.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := docker-registry skopeo umoci chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=
# Two workers, one test file each at a time (module fixtures seed once): the suite is mostly
# waiting on local servers, and every worker starts its own (moto, registry, SMTP, Airflow DB).
TEST_WORKERS ?= 2

.PHONY: demo test lint bench apt install constraints clean

demo: install
	$(PY) -m devstack.demo $(ARGS)

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	for b in inventory retention_plan retention_apply scan backup audit reports registry_page events push_to_findings; do $(PY) bench/$$b.py $(ARGS) || exit 1; done

install: apt $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

constraints:
	$(PY) -m pip freeze --exclude-editable | { echo "# Every package of a working install (pip freeze), Python 3.11. Regenerate with: make constraints"; cat; } > constraints.txt

clean:
	rm -rf $(VENV) .demo
