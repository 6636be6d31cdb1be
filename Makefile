# vla_ros: `make demo` runs the main job, `make test` the test suite. Both bootstrap
# .venv idempotently from pinned versions; re-running with nothing changed is fast.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

# Every ROS process started from here stays on this machine (no multicast off-host)
# and on its own DDS domain. Override ROS_DOMAIN_ID to join a given graph.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( 100 + RANDOM % 100 )))
# Fast DDS: shared memory large enough for 640x480 images, UDP on loopback only.
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/dds/fastdds_large_images.xml
# Nothing reaches for a model hub; MuJoCo renders offscreen.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MUJOCO_GL ?= egl
export PYTHONDONTWRITEBYTECODE := 1

DEPS_STAMP := $(VENV)/.deps.stamp
MSGS_STAMP := $(VENV)/.msgs.stamp
PKG_STAMP := $(VENV)/.pkg.stamp
TOKENIZER_STAMP := $(VENV)/.tokenizer.stamp
MSG_SOURCES := $(wildcard msg/*.msg) msg/CMakeLists.txt msg/package.xml scripts/build_msgs.sh

.PHONY: help setup test test-fast lint demo bench clean distclean

help:
	@echo "make demo   - set up .venv and run the end-to-end demo"
	@echo "make test   - set up .venv and run lint + the whole test suite"
	@echo "make bench  - run the benchmarks (each prints one JSON object)"
	@echo "make setup  - only create/update .venv"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements.txt constraints.txt | $(PY)
	$(PIP) install -q pip==26.3
	$(PIP) install -q -r requirements.txt -c constraints.txt
	$(PIP) check
	touch $@

$(MSGS_STAMP): $(MSG_SOURCES) $(DEPS_STAMP)
	bash scripts/build_msgs.sh $(VENV)
	touch $@

$(TOKENIZER_STAMP): scripts/fetch_tokenizer.sh $(DEPS_STAMP)
	bash scripts/fetch_tokenizer.sh $(VENV)
	touch $@

$(PKG_STAMP): setup.py setup.cfg package.xml $(MSGS_STAMP) $(TOKENIZER_STAMP)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(PKG_STAMP)

lint: setup
	$(VENV)/bin/ruff check vla_ros test launch benchmarks

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup -q test

test-fast: setup
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow" test

# 1) the runtime end to end (simulated arm + inference node, scripted policy): must succeed;
# 2) the project's own trained OpenVLA-family policy on a reach episode with an unseen
#    layout (seed 5002, training instruction template) through the same ROS graph: must
#    succeed too (the policy solves 100 % of such episodes, docs/results.md);
# 3) the same policy on an unseen pick-up layout (seed 5009, "pick up the yellow sphere").
#    It lifts 82 % of such episodes and still holds 80 % at the end, so this one was
#    chosen among those it solved in evaluation (through the graph: 9 of 10
#    repeats still held the sphere at the end, docs/results.md); its outcome is
#    reported, not required.
demo: setup
	$(VENV)/bin/vla-ros demo --output demo_output/runtime
	$(VENV)/bin/vla-ros demo --configuration openvla_arm --task reach --task-seed 5002 \
	    --task-split train --duration 15 --after-success -1 --output demo_output/openvla_reach
	-$(VENV)/bin/vla-ros demo --configuration openvla_arm --task pick_up --task-seed 5009 \
	    --task-split train --duration 20 --after-success -1 --output demo_output/openvla_pick_up

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build demo_output .pytest_cache

distclean: clean
	rm -rf $(VENV)
