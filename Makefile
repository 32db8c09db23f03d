# Two commands on a fresh machine: `make run` (set up, run the default comparison) and
# `make test` (set up, run the whole suite). Debian packages for the emulator and the hardware
# backend's tests are installed when run as root; otherwise we say what is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := mininet cgroup-tools openssh-server iperf3 ethtool

.PHONY: setup run test test-long system-deps lint bench figures clean arm64-device arm64-check arm64-clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,hw,ray]'
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: the emulator and hardware tests need Debian packages:$$missing;"; \
		echo "      run 'make setup' as root to install them (until then those tests are skipped)"; \
	fi

# Debian's Mininet is for the system interpreter: link just that package into the venv.
setup: $(STAMP) system-deps
	@if [ -d /usr/lib/python3/dist-packages/mininet ]; then $(PY) emu/link_mininet.py; \
	else echo "note: Mininet is not installed; the emulator is unavailable"; fi

run: setup
	$(VENV)/bin/halp compare scenarios/default.yaml --out runs/default

test: setup lint
	$(PY) -m pytest

# What `make test` leaves out to stay within 20 minutes here: the checks marked `long` (installing
# a device, Ray clusters, profiling inside a quota, more shapes of exact emulated runs, `halp
# validate` against the emulator, the longest scenario on the simulator), and the
# hostile-input fuzzing at six times `make test`'s examples (tests/test_hostile_fuzz.py).
test-long: setup
	$(PY) -m pytest -m long
	HALP_FUZZ_EXAMPLES=48 $(PY) -m pytest tests/test_hostile_fuzz.py

# Static checks, before the tests: ruff (unused `noqa` comments included) and mypy with
# pydantic's plugin, over every Python folder.
CHECKED := halp sim emu hw learning tests bench figures

lint: setup
	$(VENV)/bin/ruff check $(CHECKED)
	$(VENV)/bin/mypy $(CHECKED)

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

figures: setup
	$(VENV)/bin/halp figures

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

# An arm64 "Raspberry Pi" on this x86 machine (hw/README.md, "An arm64 device on this machine"):
# Debian bookworm arm64 under qemu-user in /var/cache/halp-arm64, its own sshd on
# 127.0.0.20:2222. Root only. The first build takes minutes; later runs only start sshd.
ARM64 := $(PYTHON) -m hw.arm64_device

arm64-device:
	$(ARM64) up

# Runs what a Pi user runs against it (setup, check, profile, hardware runs with an x86 host);
# ARM64_CHECK='--skip profile --runs vgg16' narrows it.
arm64-check: arm64-device
	PYTHONPATH=$(CURDIR) $(PY) -m hw.arm64_check $(ARM64_CHECK)

arm64-clean:
	$(ARM64) clean
