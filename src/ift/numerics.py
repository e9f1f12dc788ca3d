"""The CPU numerics a run used, and the check that they are the pinned ones.

Float results on a CPU depend on which kernels run: ATen picks vectorised kernels by the CPU's instruction set
(``ATEN_CPU_CAPABILITY``), MKL picks GEMM code paths by CPU model (``MKL_CBWR``: its conditional numerical
reproducibility branch), oneDNN by ISA (``ONEDNN_MAX_CPU_ISA``), and every reduction splits by thread count. The
pipeline pins all four in ``params.yaml: cpu_numerics``; each training and evaluation stage exports them in its
command, and the entry points record what was in force (``describe``) beside their results. docs/reproducibility.md
says which CPUs have been measured to agree under these settings (``python -m ift.fingerprint``).
"""

from __future__ import annotations

import os
import platform

# params.yaml key -> environment variable that carries it into the process (read by torch / MKL / oneDNN at start-up)
ENV_VARS = {
    "threads": "OMP_NUM_THREADS",
    "aten_cpu_capability": "ATEN_CPU_CAPABILITY",
    "mkl_cbwr": "MKL_CBWR",
    "onednn_max_cpu_isa": "ONEDNN_MAX_CPU_ISA",
}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """What decided this process's CPU float results: the CPU, torch's kernel capability, the pinned variables."""
    import torch

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        **{var: os.environ.get(var) for var in ENV_VARS.values()},
    }


def env_for(settings) -> dict[str, str]:
    """The environment variables that pin ``settings`` (a mapping with the keys of ENV_VARS); unknown keys fail."""
    unknown = set(settings) - set(ENV_VARS)
    if unknown:
        raise ValueError(f"cpu_numerics: unknown key(s) {sorted(unknown)}; known: {sorted(ENV_VARS)}")
    return {ENV_VARS[key]: str(value) for key, value in settings.items() if value is not None}


def mismatches(settings) -> list[str]:
    """Which pinned settings this process does *not* run under ('' when all hold). Read after torch is imported."""
    import torch

    problems = []
    for var, wanted in env_for(settings).items():
        if os.environ.get(var) != wanted:
            problems.append(f"{var}={os.environ.get(var)!r}, pinned {wanted!r}")
    wanted_capability = settings.get("aten_cpu_capability")
    actual = torch.backends.cpu.get_cpu_capability()
    if wanted_capability is not None and platform.machine() in ("x86_64", "AMD64") \
            and actual.lower() != str(wanted_capability).lower():
        problems.append(f"torch runs {actual} kernels, pinned {wanted_capability}")
    if settings.get("threads") is not None and torch.get_num_threads() != int(settings["threads"]):
        problems.append(f"torch uses {torch.get_num_threads()} threads, pinned {settings['threads']}")
    return problems


def load_settings(params_file) -> dict:
    """params.yaml's ``cpu_numerics`` block; a missing block or an unknown key stops with a message naming the file."""
    from pathlib import Path

    import yaml

    params = yaml.safe_load(Path(params_file).read_text()) or {}
    settings = params.get("cpu_numerics")
    if not isinstance(settings, dict):
        raise SystemExit(f"{params_file}: no `cpu_numerics` block (threads, aten_cpu_capability, mkl_cbwr, ...)")
    env_for(settings)  # unknown keys fail here
    return settings
