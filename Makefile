# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 5000
HOST   ?= 127.0.0.1
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)
# Front-end packages from npm, pinned by package-lock.json; reinstalled when the lock file changes.
NPM_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json | sha1sum | cut -c1-12)
BPMN_JS   := node_modules/bpmn-js/dist
VENDOR    := webapp/static/vendor/bpmn-js
VENDOR_STAMP := $(VENDOR)/.copied-$(shell cat package-lock.json | sha1sum | cut -c1-12)
ECHARTS   := node_modules/echarts/dist
ECHARTS_VENDOR := webapp/static/vendor/echarts
ECHARTS_STAMP  := $(ECHARTS_VENDOR)/.copied-$(shell cat package-lock.json | sha1sum | cut -c1-12)
# The administrators' editors: one esbuild bundle of bpmn-js's modeler, the properties panel,
# dmn-js and CodeMirror, from our sources; rebuilt when they or the lock file change.
EDITOR_SRC    := webapp/static/js/editor/src
EDITOR_VENDOR := webapp/static/vendor/editor
EDITOR_STAMP  := $(EDITOR_VENDOR)/.built-$(shell cat package-lock.json $(wildcard $(EDITOR_SRC)/*) | sha1sum | cut -c1-12)
# Browser tests use Debian's Chromium and CJK fonts; as root on CI, otherwise through sudo.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: install vendor packages run test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || ($(APT) update && $(APT) install -y nodejs npm)
	npm ci --no-audit --no-fund
	@rm -f node_modules/.installed-* && touch $@

# The pages load bpmn-js from here, never from the internet (webapp/static/vendor is gitignored).
$(VENDOR_STAMP): $(NPM_STAMP)
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)
	cp $(BPMN_JS)/bpmn-navigated-viewer.production.min.js $(VENDOR)/
	cp -R $(BPMN_JS)/assets $(VENDOR)/assets
	@touch $@

# The dashboards draw their charts with ECharts, from here too.
$(ECHARTS_STAMP): $(NPM_STAMP)
	rm -rf $(ECHARTS_VENDOR) && mkdir -p $(ECHARTS_VENDOR)
	cp $(ECHARTS)/echarts.min.js $(ECHARTS_VENDOR)/
	@touch $@

# The editor page loads vendor/editor/editor.js and editor.css (with the icon fonts beside them).
$(EDITOR_STAMP): $(NPM_STAMP) $(wildcard $(EDITOR_SRC)/*)
	rm -rf $(EDITOR_VENDOR) && mkdir -p $(EDITOR_VENDOR)
	node_modules/.bin/esbuild $(EDITOR_SRC)/index.js --bundle --minify --format=iife \
		--target=es2020 --outfile=$(EDITOR_VENDOR)/editor.js '--asset-names=[name]-[hash]' \
		--loader:.woff=file --loader:.woff2=file --loader:.ttf=file --loader:.eot=file \
		--loader:.svg=file --legal-comments=external --log-level=warning
	@touch $@

vendor: $(VENDOR_STAMP) $(ECHARTS_STAMP) $(EDITOR_STAMP)

install: $(STAMP) vendor

# What the tests need from Debian, in one apt run when anything is missing: Chromium and a CJK
# font for tests/e2e (Playwright drives /usr/bin/chromium; it never downloads a browser of its
# own), Redis for the rq tests and PostgreSQL for the suite's PostgreSQL pass. No server is
# started here: the tests run their own on a free loopback port for the session
# (tests/redis_fixture.py, tests/postgres_fixture.py), never the packaged services.
packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing="$$missing fonts-noto-cjk"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing from Debian:$$missing"; \
		$(APT) update && $(APT) install -y $$missing; \
	fi

# Creates the SQLite database under instance/, loads the demo township into an empty database
# (a rerun keeps existing data) and serves in the foreground until Ctrl-C.
run: install
	$(BIN)/gridloop init-db
	$(BIN)/gridloop demo
	$(BIN)/gridloop serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check engine webapp jobs tests bench migrations
	$(BIN)/ruff format --check engine webapp jobs tests bench migrations

# The whole suite twice: on SQLite files, then on a throwaway PostgreSQL cluster of its own
# (GRIDLOOP_TEST_DATABASE, read by tests/apps.py). Both passes run; either failing fails the target.
test: install packages lint
	@status=0; \
	GRIDLOOP_TEST_DATABASE=sqlite $(BIN)/pytest || status=1; \
	GRIDLOOP_TEST_DATABASE=postgresql $(BIN)/pytest || status=1; \
	exit $$status

bench: install
	$(BIN)/python bench/step_cost.py

clean:
	rm -rf $(VENV) instance .pytest_cache test-output node_modules webapp/static/vendor
