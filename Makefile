# The two commands of the README:  `make demo`  and  `make test`.
# Both build .venv themselves; `make test` also installs the Debian packages the tests need
# (as root, or through sudo) when they are missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := portaudio19-dev libsndfile1 alsa-utils mosquitto systemd postgresql chromium \
                e2fsprogs mount
PKGS ?= $(APT_PACKAGES)

.PHONY: demo station test lint bench soak system-deps clean

$(VENV)/.runtime: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[flac,litert]"
	touch $@

$(VENV)/.test: $(VENV)/.runtime system-deps
	$(BIN)/pip install -q -e ".[flac,litert,audio,test,convert,station]"
	$(BIN)/pip install -q --no-deps "tf-keras>=2.16"
	touch $@

# The second interpreter: tflite-runtime needs numpy<2, so it gets its own environment.
.venv-tflite/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv .venv-tflite
	.venv-tflite/bin/pip install -q --upgrade pip
	.venv-tflite/bin/pip install -q -e ".[tflite]"
	touch $@

system-deps:
	@missing=$$(for p in $(PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## The daemon on a shipped sample recording, with a private broker and the messages shown live.
demo: $(VENV)/.runtime
	@$(MAKE) --no-print-directory system-deps PKGS=mosquitto
	$(BIN)/lungedge demo

$(VENV)/.station: $(VENV)/.runtime
	$(BIN)/pip install -q -e ".[flac,litert,station]"
	touch $@

## The station's web UI on the demo's broker, the sample looping into it, until Ctrl-C.
station: $(VENV)/.station
	@$(MAKE) --no-print-directory system-deps PKGS=mosquitto
	$(BIN)/lungedge demo --station

## Lint and type-check, then the whole test suite. pytest's exit code 5 (no test ran) is a failure.
test: $(VENV)/.test .venv-tflite/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	@$(BIN)/python -m pytest -q -rs; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: $(VENV)/.test
	$(BIN)/python bench/frontend_speed.py
	$(BIN)/python bench/serial_decode.py
	$(BIN)/python bench/segmentation.py
	$(BIN)/python bench/daemon_latency.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/station_ingest.py
	$(BIN)/python bench/station_load.py --ui

## A day of audio through the daemon's path: RSS and CPU over time (hours; run it by hand).
soak: $(VENV)/.test
	$(BIN)/python bench/soak.py --hours 24

clean:
	rm -rf $(VENV) .venv-tflite .pytest_cache .hypothesis .ruff_cache *.egg-info
