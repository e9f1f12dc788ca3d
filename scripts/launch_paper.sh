#!/usr/bin/env bash
# Launch one paper-profile training cell on this node's GPUs with accelerate (FSDP by default).
#   scripts/launch_paper.sh method=ift start=base seed=0
#   ACCELERATE_CONFIG=conf/accelerate/deepspeed_zero3.yaml scripts/launch_paper.sh method=sft_dpo start=sft_beta
# The paper profile needs the hub: this script exports the online settings the entry points default off.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0
exec accelerate launch --config_file "${ACCELERATE_CONFIG:-conf/accelerate/fsdp.yaml}" -m ift.train profile=paper "$@"
