#!/usr/bin/env bash
# `make smoke-twice`: run the smoke pipeline twice from scratch (same seeds) and fail unless both runs give a
# byte-identical report/summary.json (determinism on CPU, issue: two smoke runs give identical summaries).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
for run in 1 2; do
  bash "$repo/scripts/smoke.sh" "$repo/outputs/smoke/run$run"
done
if cmp "$repo/outputs/smoke/run1/report/summary.json" "$repo/outputs/smoke/run2/report/summary.json"; then
  echo "smoke twice: identical summary.json"
else
  diff "$repo/outputs/smoke/run1/report/summary.json" "$repo/outputs/smoke/run2/report/summary.json" || true
  exit 1
fi
