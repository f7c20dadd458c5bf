# The front door. Every target sets up the locked environment first (uv, from uv.lock).
#   make run TASK=iflytek METHOD=fgm            one run (fetches data and checkpoint if missing)
#   make pretrain TASK=tnews MODEL=bert_mini    masked-LM pretraining -> data/models/pretrained/<id>/ (docs/pretraining.md)
#   make sweep                                  every run of a study (EXPERIMENT=blog: configs/experiment/) not yet complete
#   make sweep SEEDS=0,1,2                      the same, with TASKS= METHODS= SEEDS= MODEL= replacing the study's rows
#   make table                                  table.md, summary.csv, seeds.csv, pictures (+ CSVs) of RESULTS
#   make model MODEL=albert_tiny_zh             download + verify a model's checkpoint (configs/model/)
#   make submit MODEL=bert_base METHOD=fgm      CLUE's upload zip: each task's best-dev run in RESULTS
#   make attack RUN=<record> ARGS="eval.attack.epsilons=[0.05,0.1]"   accuracy under attack, into the record
#   make tensorboard RESULTS=results            live curves of the runs (per-step loss, learning rate, method quantities)
#   make test                                   the test suite
SHELL := bash
.DEFAULT_GOAL := help

TASK ?= tnews
METHOD ?= baseline
MODEL ?= bert_base
SEED ?= 0
ARGS ?=
TASKS ?= iflytek,tnews
METHODS ?= baseline,fgm,gp
SEEDS ?= 0,1,2,3,4
RESULTS ?= results
EXPERIMENT ?= blog
LAUNCHER ?=

# uv from PATH, else the copy pip installs on first use.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := .venv/bin/python
ENV_STAMP := .venv/.synced

# The `gpu` extra (pyproject.toml: TensorFlow's CUDA 12 wheels, about 3 GB) when this machine has
# an NVIDIA GPU, i.e. `nvidia-smi -L` lists one; GPU=1 / GPU=0 (command line or environment)
# decides instead. A Slurm sweep runs on the GPU nodes, not on the login node that calls make.
ifeq ($(filter command line environment,$(origin GPU)),)
  GPU := $(if $(filter slurm,$(LAUNCHER)),1,$(if $(shell nvidia-smi -L 2>/dev/null | grep '^GPU '),1,0))
endif
ifeq ($(filter 0 1,$(GPU)),)
  $(error GPU=$(GPU): use GPU=1 (with the CUDA wheels) or GPU=0 (CPU only))
endif
comma := ,
ENV_EXTRA := $(if $(filter 1,$(GPU)),gpu,cpu)$(if $(EXTRAS),+$(subst $(comma),+,$(EXTRAS)))
# The stamp holds the extra it was synced with: a different one now re-syncs (uv sync removes
# what the other one installed).
ENV_SWITCH := $(if $(filter $(ENV_EXTRA),$(shell cat $(ENV_STAMP) 2>/dev/null)),,env-switch)

.PHONY: help env env-switch doctor data model run pretrain sweep predict export submit attack table tensorboard test bench evidence evidence-remake
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(ENV_STAMP): pyproject.toml uv.lock $(ENV_SWITCH)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen$(if $(filter 1,$(GPU)), --extra gpu)$(foreach e,$(subst $(comma), ,$(EXTRAS)), --extra $(e))
	@echo $(ENV_EXTRA) > $@

env-switch:

env: $(ENV_STAMP)  ## create .venv from uv.lock (with the CUDA wheels if nvidia-smi lists a GPU; GPU=1/0 decides; EXTRAS=torch reads pytorch_model.bin)

data: $(ENV_STAMP)  ## download + verify CLUE data (or verify it if present): TASKS=iflytek,tnews ARGS=
	$(PY) -m experiments.commands.download data --tasks $(TASKS) $(ARGS)

model: $(ENV_STAMP)  ## download + verify the checkpoint of MODEL (or verify it if present): ARGS=
	$(PY) -m experiments.commands.download model model=$(MODEL) $(ARGS)

run: $(ENV_STAMP)  ## train one run: TASK= METHOD= MODEL= SEED= ARGS="hydra overrides"
	$(PY) -m experiments.commands.run task=$(TASK) method=$(METHOD) model=$(MODEL) seed=$(SEED) $(ARGS)

pretrain: $(ENV_STAMP)  ## masked-LM pretraining of MODEL= on TASK='s texts, saved as a model folder (its path: the last line): ARGS="pretrain.max_steps=2000"
	$(PY) -m experiments.commands.pretrain task=$(TASK) model=$(MODEL) $(ARGS)

# $(call given,VAR,key): key=$(VAR) if VAR was given on the command line or in the environment, else nothing
given = $(if $(filter command line environment,$(origin $(1))),$(2)=$($(1)))

sweep: $(ENV_STAMP)  ## Hydra multirun of a study, EXPERIMENT=blog (configs/experiment/); TASKS= METHODS= SEEDS= MODEL= replace its grid's rows; ARGS=, LAUNCHER=joblib|slurm|submitit_local; skips complete runs, resumes interrupted ones
	$(PY) -m experiments.commands.run -m experiment=$(EXPERIMENT) $(call given,TASKS,task) $(call given,METHODS,method) \
		$(call given,MODEL,model) $(call given,SEEDS,seed) \
		trainer.skip_completed=true trainer.resume=true $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) $(ARGS)

predict: $(ENV_STAMP)  ## CLUE test-set submission files from a run's best weights: RUN=<record or run folder> [TASK=]
	$(PY) -m experiments.commands.predict $(RUN) $(if $(filter command line,$(origin TASK)),--task $(TASK))

export: $(ENV_STAMP)  ## a run (RUN=) or a make pretrain folder (MODEL_DIR=) as a Hugging Face folder [OUT=]
	@test -n "$(RUN)$(MODEL_DIR)" || { echo "error: say what: make export RUN=results/runs/<record>.json or MODEL_DIR=<pretrained folder>" >&2; exit 2; }
	$(PY) -m experiments.commands.export $(if $(RUN),--run $(RUN),--model-dir $(MODEL_DIR)) $(if $(OUT),--out $(OUT))

attack: $(ENV_STAMP)  ## accuracy under attack of a run's best weights, added to its record: RUN=<record or run folder> ARGS="eval.attack.epsilons=[0.05,0.1,0.2]"
	$(PY) -m experiments.commands.attack $(RUN) $(ARGS)

submit: $(ENV_STAMP)  ## CLUE upload zip of each task's best-dev run of METHOD= MODEL= in RESULTS=, or of RUNS="a.json b.json"
	$(PY) -m experiments.commands.submit $(RESULTS) --method $(METHOD) --model $(MODEL) $(if $(RUNS),--runs "$(RUNS)")

table: $(ENV_STAMP)  ## write table.md, summary.csv, seeds.csv, accuracy/curves/sweep_<key>.png (+ CSVs) from the run records in RESULTS=
	$(PY) -m experiments.commands.table $(RESULTS)

tensorboard: $(ENV_STAMP)  ## TensorBoard on the runs' event files in RESULTS=/tensorboard (http://localhost:6006; ARGS="--port 6007 --bind_all")
	$(PY) -m tensorboard.main --logdir $(RESULTS)/tensorboard $(ARGS)

bench: $(ENV_STAMP)  ## seconds per train step of each method, MODEL='s shape (no weights), one process: ARGS="--layers 2 --rounds 3 trainer.precision=mixed_float16"
	$(PY) -m experiments.commands.bench model=$(MODEL) $(ARGS)

doctor: $(ENV_STAMP)  ## check this machine before a sweep: GPU, CUDA, data, a few steps of each method, the grid's time (TASKS= METHODS= SEEDS= MODEL= ARGS=)
	$(PY) -m experiments.commands.doctor --tasks $(TASKS) --methods $(METHODS) --seeds $(SEEDS) model=$(MODEL) $(ARGS)

.PHONY: lint test-fast
lint: $(ENV_STAMP)  ## ruff (lint, and the format check) and the import contracts (pyproject.toml: lint-imports)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-cache

# Two pytest-xdist workers, a test file each at a time (module fixtures stay in one process): half the
# suite waits on subprocesses, Slurm and sockets, so two workers fill two cores (docs/tests.md).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test: lint  ## lint, then the whole test suite (about 10 minutes on 2 idle cores; docs/tests.md); TEST_WORKERS=2
	$(PYTEST)

test-fast: lint  ## lint, then the tests not marked slow or slurm (under 2 minutes on 2 cores)
	$(PYTEST) -m "not slow and not slurm"

# The TNEWS self-pretrained study (docs/evidence/tnews-self-pretrained/PLAN.md; the steps: experiments/commands/evidence.py).
evidence: $(ENV_STAMP)  ## the TNEWS self-pretrained study from scratch or where it stopped, then its tables (docs/evidence/tnews-self-pretrained/): ARGS="paths.clue_dir=..."
	$(PY) -m experiments.commands.evidence study $(ARGS)

evidence-remake: $(ENV_STAMP)  ## the study's 20 main-grid runs made again into results/evidence/remake, each compared with its committed record: ARGS=
	$(PY) -m experiments.commands.evidence remake $(ARGS)
