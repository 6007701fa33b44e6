# The two commands a new user needs: `make demo` and `make test`.
# Everything they need is installed here, into .venv, from the package registries:
# `make demo` only the runtime (`pip install -e .`), `make test` the test tools too
# (`.[dev]`: pytest, ruff, mypy, Playwright …) and Debian's Chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
PACKAGE_TOOLS := $(VENV)/.package-tools

.PHONY: demo test test-ha coverage lint typecheck unit bench clean chromium qt-libs haproxy screenshots package agones-protos agones-node

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# PyInstaller and the desktop app (PySide6), for `make package` alone (`dev` has both).
$(PACKAGE_TOOLS): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[package,launcher-app]'
	touch $(PACKAGE_TOOLS)

# The browser tests drive Debian's Chromium with Playwright (never `playwright install`).
chromium:
	@test -x /usr/bin/chromium \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		     $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# The replicas' tests put Debian's HAProxy in front of them, with deploy/haproxy.cfg.
haproxy:
	@test -x /usr/sbin/haproxy \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		     $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy; }

# The launcher app's tests run Qt on its offscreen platform, which still loads these system
# libraries (what PySide6's Gui, Widgets, DBus and offscreen plugin link to; apt brings
# theirs). Fonts make the screenshots readable.
QT_LIBS := libegl1 libgl1 libfontconfig1 libxkbcommon0 libglib2.0-0 libdbus-1-3 libx11-6 fonts-dejavu-core
qt-libs:
	@for lib in libEGL.so.1 libGL.so.1 libfontconfig.so.1 libxkbcommon.so.0 libglib-2.0.so.0 \
			libdbus-1.so.3 libX11.so.6; do \
		PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p | grep -q "$$lib " || missing=1; done; \
	test -z "$$missing" && test -d /usr/share/fonts/truetype/dejavu \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		     $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $(QT_LIBS); }

# The Agones SDK's Python stubs (src/changeover/agones/_pb, tracked) from the vendored
# official protos (src/changeover/agones/proto, their version in its VERSION file).
agones-protos: $(STAMP)
	$(BIN)/python -m changeover.agones.regenerate

# Agones' official Node.js SDK, at the version its package-lock.json pins, for the tests'
# Agones-only game server (tests/integration/agones/nodegame). The tests call this too.
AGONES_NODE := tests/integration/agones/nodegame
agones-node: $(AGONES_NODE)/node_modules/.installed
$(AGONES_NODE)/node_modules/.installed: $(AGONES_NODE)/package.json $(AGONES_NODE)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		     $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; }
	cd $(AGONES_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(RUNTIME)
	$(BIN)/python examples/demo.py

# The standalone launcher players get: dist/changeover-launcher/changeover-launcher, which
# runs with no Python on the machine (packaging/build.py; its options bundle a studio's
# launcher.toml and set the version).
package: $(PACKAGE_TOOLS) qt-libs
	$(BIN)/python packaging/build.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples packaging
	$(BIN)/ruff format --check src tests bench examples packaging

typecheck: $(STAMP)
	$(BIN)/mypy

# Three test workers: most tests wait on real servers and processes, not on the CPU.
PYTEST := $(BIN)/python -m pytest -n 4 --dist loadfile --durations=15 -p no:cacheprovider

test: $(STAMP) lint typecheck chromium qt-libs agones-node haproxy
	$(PYTEST) -m "not ha"

# The high-availability tests (marked `ha`: tests/ha's drills and the replica tests of
# tests/integration/control): replicas behind HAProxy, on a shared bucket, killed, paused
# and cut off under every patch-job method, allocation load, pushes and streams. Minutes
# of their own, so apart from `make test`; CI (.ci/run) runs both.
test-ha: $(STAMP) haproxy
	$(BIN)/python -m pytest -n 2 --dist load --durations=10 -p no:cacheprovider -m ha

# The same run, measured by coverage.py (servers and agents the tests start included):
# slower (every server process is traced), so not part of `make test`.
coverage: $(STAMP) chromium qt-libs agones-node haproxy
	$(PYTEST) --cov=changeover --cov-report=term:skip-covered

# The README's screenshots (docs/screenshots, tracked) change only when asked: a plain
# test run takes none.
screenshots: $(STAMP) chromium qt-libs
	CHANGEOVER_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -p no:cacheprovider tests/web \
		tests/integration/launcher/app/test_flows.py tests/integration/launcher/app/test_bad_input.py

bench: $(STAMP) qt-libs haproxy
	@# bench/delta.py compares with rsync, zstd and casync: install them once, from apt.
	@command -v rsync >/dev/null && command -v zstd >/dev/null && command -v casync >/dev/null \
		&& [ -x /usr/bin/time ] \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		     $$SUDO apt-get update && $$SUDO apt-get install -y rsync zstd casync time; }
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage dist build
