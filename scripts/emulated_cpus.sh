#!/usr/bin/env bash
# Which of the pipeline's CPU operations compute differently on another CPU model, under params.yaml's pinned
# cpu_numerics: scripts/cpu_ops_probe.py natively, then under QEMU's user-mode emulator posing as each CPU model
# (its CPUID: vendor, model, instruction sets), printed side by side. MKL and torch pick their kernels from CPUID, so
# this shows which code paths another CPU would take; results: docs/reproducibility.md.
#
#   apt-get install qemu-user                      # once (Debian package); emulation is ~100x slower than native
#   bash scripts/emulated_cpus.sh                  # Haswell-v4 (Intel, AVX2) and EPYC-Rome (AMD, AVX2)
#   bash scripts/emulated_cpus.sh EPYC-Milan       # any model of `qemu-x86_64 -cpu help`
#   MKL_CBWR_OVERRIDE=COMPATIBLE bash scripts/emulated_cpus.sh   # another MKL code branch
#   FINGERPRINT=1 bash scripts/emulated_cpus.sh    # also a shortened `make fingerprint` (2 steps; minutes per CPU)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 not found: apt-get install qemu-user" >&2; exit 2; }
[ -x "$PY" ] || { echo "$PY not found: run make setup (or set VENV=)" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || { echo "this check emulates x86-64 CPUs on an x86-64 host" >&2; exit 2; }
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(Haswell-v4 EPYC-Rome)

# the pinned settings, as every stage exports them (params.yaml: cpu_numerics)
mapfile -t pinned < <("$PY" -c "
from ift.numerics import env_for, load_settings
for var, value in env_for(load_settings('params.yaml')).items(): print(f'{var}={value}')")
if [ -n "${MKL_CBWR_OVERRIDE:-}" ]; then
  for i in "${!pinned[@]}"; do
    if [[ ${pinned[$i]} == MKL_CBWR=* ]]; then pinned[$i]="MKL_CBWR=$MKL_CBWR_OVERRIDE"; fi
  done
fi
echo "settings: ${pinned[*]}"

mini=""
if [ -n "${FINGERPRINT:-}" ]; then  # make fingerprint's computation, shortened so that emulation takes minutes
  mini="$(mktemp -d)/fingerprint.yaml"
  "$PY" -c "
import sys, yaml
config = yaml.safe_load(open('conf/fingerprint.yaml'))
config.update(steps=2, batch_size=2, block_length=64, generate_tokens=4, expected_sha256='0' * 64)
open(sys.argv[1], 'w').write(yaml.safe_dump(config, sort_keys=False))" "$mini"
fi

run() {  # run <label> <command prefix...>: the probe's line (and the shortened fingerprint's hash)
  local label="$1"; shift
  local started=$SECONDS ops fp=""
  ops=$(env "${pinned[@]}" "$@" "$PY" scripts/cpu_ops_probe.py 2> >(grep -v "TCG doesn't support" >&2)) || true
  [ -n "$ops" ] || { echo "$label: the probe printed nothing (its error is above)" >&2; exit 1; }
  if [ -n "$mini" ]; then
    fp=$(env "${pinned[@]}" IFT_FINGERPRINT_PINNED=1 "$@" "$PY" -m ift.fingerprint --config "$mini" --set mkl_cbwr="$(
      printf '%s\n' "${pinned[@]}" | sed -n 's/^MKL_CBWR=//p')" 2>/dev/null | sed -n 's/^fingerprint: //p')
    ops="$ops fingerprint_2_steps=${fp:0:8}"
  fi
  echo "$label ($((SECONDS - started)) s): $ops"
}

native=$(run native)
echo "$native"
for model in "${models[@]}"; do
  line=$(run "$model" qemu-x86_64 -cpu "$model")
  echo "$line"
  differs=$(comm -13 <(tr ' ' '\n' <<<"${native#*: }" | sort) <(tr ' ' '\n' <<<"${line#*: }" | sort) | cut -d= -f1 | xargs)
  echo "  differs from native: ${differs:-nothing}"
done
