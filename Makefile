# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 5000
HOST   ?= 127.0.0.1
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install run test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Creates the SQLite database under instance/, loads the demo township into an empty database
# (a rerun keeps existing data) and serves in the foreground until Ctrl-C.
run: install
	$(BIN)/gridloop init-db
	$(BIN)/gridloop demo
	$(BIN)/gridloop serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check engine webapp tests bench
	$(BIN)/ruff format --check engine webapp tests bench

test: install lint
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/step_cost.py

clean:
	rm -rf $(VENV) instance .pytest_cache test-output
