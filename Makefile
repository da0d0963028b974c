# Two entry points: `make demo` and `make test`. Everything else is set up on demand.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit browser-deps ts-deps client bench bench-smoke clean screenshots \
        api-docs

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nucleus demo

# Headless Chromium for the browser tests (Debian's package; playwright drives it).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The TypeScript compiler for the type tests (tests/typescript/package-lock.json pins it).
TS_DIR := tests/typescript
TSC    := $(TS_DIR)/node_modules/.bin/tsc

$(TSC): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian's nodejs and npm for the TypeScript tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(TSC)

ts-deps: $(TSC)

# The served browser client: stream.js minified (tests check it is in sync).
CLIENT     := src/nucleus/stream/static
CLIENT_OUT := $(CLIENT)/stream.min.js
client: $(TSC)
	$(TS_DIR)/node_modules/.bin/terser $(CLIENT)/stream.js --module --compress --mangle \
	  --preamble "/* Nucleus Stream browser client: stream.js, minified by make client */" \
	  -o $(CLIENT_OUT)

# The README's pictures of the demo apps, taken by their browser tests.
screenshots: $(STAMP) browser-deps
	NUCLEUS_SCREENSHOTS=1 $(PY) -m pytest tests/test_browser_apps.py -q

# docs/api.md, rendered from the docstrings (tests/test_api_docs.py checks it is in sync).
api-docs: $(STAMP)
	$(PY) -m nucleus._apidoc

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The whole Autobahn suite on both front doors, compression cases included: the
# longest part of the run (14 and 11 min per door on a busy 2-core machine, docs/autobahn.md).
unit: $(STAMP)
	AUTOBAHN_FULL=1 $(PY) -m pytest

test: $(STAMP) browser-deps ts-deps lint typecheck unit

# The full side-by-side run (~20 min): peers and the chart need bench/requirements.txt.
bench: $(STAMP)
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m bench

bench-smoke: $(STAMP)
	$(PY) -m bench --smoke --servers nucleus,websockets --require nucleus

clean:
	rm -rf $(VENV) bench/.build $(TS_DIR)/node_modules
