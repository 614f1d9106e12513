# Infrai Console. `make run` starts the console; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: install run cluster test lint format migrations-check clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python -m infrai.devserver

# 2 daphne + 2 workers + housekeeping behind a balancer on PORT (see devtools/cluster.py).
cluster: install
	$(BIN)/python -m devtools.cluster

test: install
	sh devtools/browser_deps.sh
	$(BIN)/python manage.py makemigrations --check --dry-run > /dev/null || (echo "Model changes without migrations: run manage.py makemigrations" && exit 1)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
