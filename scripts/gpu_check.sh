#!/usr/bin/env bash
# One command for a CUDA machine (target: <= 8 min on one H100), ready for the day a GPU is there:
#   1. python -m ift.bench shape=gpu (bf16): step time / memory of every method side by side on one GPU;
#   2. every method (sft, dpo, sft_dpo, orpo, ift), 10 optimiser steps under profile=paper settings on a
#      random-initialised Mistral-shaped ~0.94B model, with conf/accelerate/fsdp.yaml on all local GPUs;
#   3. appends the figures (step time, tokens/s, peak memory, MFU, ratios to SFT) and the machine to
#      benchmarks/RESULTS.md (src/ift/bench/gpu_check.py says how each figure is measured).
# Without CUDA it stops at once. `scripts/gpu_check.sh --dry-run` runs on a CPU: it composes every config and
# builds every trainer with a toy-sized model (tests/ift/bench/test_gpu_check.py runs it).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python}"
if [[ "${1:-}" == "--dry-run" ]]; then
  exec "$python" -m ift.bench.gpu_check --dry-run
fi
gpus="$("$python" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
if [[ "$gpus" == "0" ]]; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is false); nothing was run." >&2
  echo "gpu_check: run it on a CUDA machine, or 'scripts/gpu_check.sh --dry-run' to check the configs on a CPU." >&2
  exit 2
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/ift-gpu-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export IFT_ROOT="$repo" TRL_EXPERIMENTAL_SILENCE=1
start=$(date +%s)
"$python" -m ift.bench shape=gpu out="$work/bench.json"
"$python" -m ift.bench.gpu_check prepare --work "$work"
for method in sft dpo sft_dpo orpo ift; do
  accelerate launch --config_file conf/accelerate/fsdp.yaml --num_processes "$gpus" \
    -m ift.bench.gpu_check train --work "$work" --method "$method"
done
"$python" -m ift.bench.gpu_check report --work "$work" --bench "$work/bench.json" --results benchmarks/RESULTS.md
echo "gpu_check: done in $(( $(date +%s) - start )) s on $gpus GPU(s); figures appended to benchmarks/RESULTS.md"
