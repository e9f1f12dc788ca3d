"""``python -m ift.fingerprint`` (``make fingerprint``): one hash of a short, deterministic CPU computation under the
pipeline's pinned CPU numerics, compared with the hash committed in conf/fingerprint.yaml.

Two machines that print the same hash run the same kernels in the same float order, so ``dvc repro`` gives them the
same weights and tables; a different hash means this machine's numbers will differ from the committed ones. The
computation covers what the pipeline's numbers depend on: the world's tokenizer and corpus, the tiny Mistral's
forward and backward (GEMMs, SDPA attention, RMSNorm, SwiGLU, cross-entropy), AdamW, a scored evaluation batch and
greedy generation. docs/reproducibility.md lists the CPUs measured.

    python -m ift.fingerprint                   # exit 0: matches; 1: differs (settings and both hashes printed)
    python -m ift.fingerprint --record          # print the hash and write it into conf/fingerprint.yaml
    python -m ift.fingerprint --set mkl_cbwr=COMPATIBLE   # the hash under another setting (not compared)
    python -m ift.fingerprint --params P --config C  # other params.yaml / fingerprint config

The pinned settings (params.yaml ``cpu_numerics``) must be in the environment before torch starts, so when they are
not, this module re-executes itself with them set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import ift  # noqa: F401  (offline defaults)
from ift.numerics import env_for, load_settings
from ift.paths import REPO_ROOT

REEXEC_MARK = "IFT_FINGERPRINT_PINNED"
# The CPUs whose MKL honours MKL_CBWR=AVX2: elsewhere MKL runs a branch of its own for GEMMs and vector math (measured
# under emulation, docs/reproducibility.md), so the committed hash is expected only on these.
PINNABLE_VENDORS = ("GenuineIntel",)


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD, ...), or '' where there is none (not Linux or not x86)."""
    try:
        found = re.search(r"^vendor_id\s*:\s*(\S+)", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        return ""
    return found.group(1) if found else ""


def compute(config: dict, workdir: Path) -> tuple[str, dict]:
    """(sha256, details) of the fingerprint computation; ``details`` has the loss curve and timings."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from ift.train.start_points import build_tiny_model
    from ift.world.build import generate_world

    started = time.perf_counter()
    generate_world(dict(config["world"]), workdir / "world")
    tokenizer = AutoTokenizer.from_pretrained(str(workdir / "world" / "tokenizer"))
    world_seconds = time.perf_counter() - started

    model_cfg = OmegaConf.load(REPO_ROOT / "conf" / "model" / "tiny.yaml")
    model = build_tiny_model(model_cfg, tokenizer, int(config["seed"]))
    length, batch_size, steps = int(config["block_length"]), int(config["batch_size"]), int(config["steps"])

    def blocks(split: str) -> torch.Tensor:
        ids: list[int] = []
        with open(workdir / "world" / "corpus" / f"{split}.jsonl") as handle:
            for line in handle:
                ids += [tokenizer.bos_token_id, *tokenizer(json.loads(line)["text"], add_special_tokens=False)
                        ["input_ids"], tokenizer.eos_token_id]
        usable = len(ids) // length * length
        return torch.tensor(ids[:usable]).view(-1, length)

    train, valid = blocks("train"), blocks("valid")
    if len(train) < batch_size:
        raise SystemExit(f"fingerprint world too small: {len(train)} blocks < batch_size {batch_size}")
    generator = torch.Generator().manual_seed(int(config["seed"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    curve = []
    started = time.perf_counter()
    for _ in range(steps):
        batch = train[torch.randperm(len(train), generator=generator)[:batch_size]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        curve.append(float(loss.detach()))
    train_seconds = time.perf_counter() - started

    model.eval()
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        eval_batch = valid[:batch_size]
        logits = model(input_ids=eval_batch).logits
        digest.update(logits.contiguous().numpy().tobytes())
        prompts = eval_batch[:4, :32]
        generated = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                   max_new_tokens=int(config["generate_tokens"]), pad_token_id=tokenizer.pad_token_id)
        digest.update(generated.numpy().tobytes())
    return digest.hexdigest(), {"loss_first": curve[0], "loss_last": curve[-1], "world_seconds": world_seconds,
                                "train_seconds": train_seconds}


def vendor_note(vendor: str, mkl_cbwr: str | None) -> str | None:
    """Why this CPU cannot give the committed hash, when its vendor decides it (None when it may)."""
    if not vendor:
        return ("this CPU reports no x86 vendor: the pinned x86 kernels (MKL, ATen's avx2) do not apply, so its hash "
                "is expected to differ from the committed one (docs/reproducibility.md)")
    if vendor in PINNABLE_VENDORS or mkl_cbwr == "COMPATIBLE":  # COMPATIBLE is honoured on every x86 vendor
        return None
    return (f"MKL honours MKL_CBWR={mkl_cbwr} on Intel CPUs only; this CPU ({vendor}) runs MKL's own GEMM and "
            "vector-math branch, so its hash is expected to differ from the committed one (docs/reproducibility.md)")


def record(config_file: Path, sha: str) -> None:
    """Write ``expected_sha256: <sha>`` into the config file, keeping its comments."""
    from ift.io import write_text_atomic

    lines = Path(config_file).read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("expected_sha256:"):
            comment = line.split("#", 1)[1] if "#" in line else ""
            lines[index] = f"expected_sha256: {sha}" + (f"  # {comment.strip()}\n" if comment else "\n")
            break
    else:
        raise SystemExit(f"{config_file}: no `expected_sha256:` line to write the hash into")
    write_text_atomic(config_file, "".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ift.fingerprint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "conf" / "fingerprint.yaml")
    parser.add_argument("--record", action="store_true", help="write this machine's hash as the expected one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one cpu_numerics setting; the hash is printed, not compared or recorded")
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    for override in args.set:
        key, _, value = override.partition("=")
        if not value:
            raise SystemExit(f"--set {override!r}: expected KEY=VALUE with KEY one of the cpu_numerics keys")
        settings[key] = value
    if args.set and args.record:
        raise SystemExit("--record writes the hash of the pinned settings only; drop --set")
    wanted = env_for(settings)
    if any(os.environ.get(var) != value for var, value in wanted.items()):
        if os.environ.get(REEXEC_MARK):
            raise SystemExit(f"fingerprint: could not pin {wanted} (environment has "
                             f"{ {var: os.environ.get(var) for var in wanted} })")
        env = {**os.environ, **wanted, REEXEC_MARK: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "ift.fingerprint", *sys.argv[1:]], env)

    import torch
    import yaml

    from ift.numerics import describe, mismatches

    config = yaml.safe_load(args.config.read_text())

    torch.set_num_threads(int(settings.get("threads") or torch.get_num_threads()))
    problems = mismatches(settings)
    with tempfile.TemporaryDirectory(prefix="ift-fingerprint-") as tmp:
        sha, details = compute(config, Path(tmp))
    machine = describe()
    print(f"fingerprint: {sha}")
    print(f"  cpu: {machine['cpu']} ({machine['machine']}), torch {machine['torch']}, "
          f"ATen kernels {machine['aten_cpu_capability']}, {machine['threads']} threads")
    print("  settings: " + ", ".join(f"{var}={os.environ.get(var)}" for var in wanted)
          + f" (from {args.params}: cpu_numerics)")
    print(f"  loss {details['loss_first']:.4f} -> {details['loss_last']:.4f} over {config['steps']} steps; "
          f"world {details['world_seconds']:.1f} s, training {details['train_seconds']:.1f} s")
    for problem in problems:
        print(f"  WARNING: not pinned as params.yaml says: {problem}")
    note = vendor_note(cpu_vendor(), os.environ.get("MKL_CBWR"))
    if note:
        print(f"  note: {note}")
    if args.set:
        print("  (settings overridden with --set: not compared with the committed hash)")
        return 0
    if args.record:
        record(args.config, sha)
        print(f"  recorded in {args.config}; add this CPU to docs/reproducibility.md")
        return 0
    expected = config.get("expected_sha256")
    if sha == expected:
        print("  matches the committed hash: this machine reproduces the committed numbers")
        return 0
    print(f"FINGERPRINT MISMATCH: expected {expected} ({args.config})\n"
          f"  this machine's CPU numerics differ from the machine the committed results came from, under the "
          f"settings above; `dvc repro` here will not reproduce the committed weights and tables", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
