"""`make fingerprint`: a deterministic hash under the pinned CPU numerics, compared loudly with the committed one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT
from ift import fingerprint, numerics
from ift.numerics import env_for, mismatches


def _small_config(tmp_path, expected="0" * 64):
    config = yaml.safe_load((REPO_ROOT / "conf" / "fingerprint.yaml").read_text())
    config.update(steps=2, batch_size=2, generate_tokens=2, expected_sha256=expected)
    path = tmp_path / "fingerprint.yaml"
    path.write_text("# a test copy\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    return subprocess.run([sys.executable, "-m", "ift.fingerprint", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_changed_hash_fails_loudly_naming_the_settings_and_a_recorded_one_matches(tmp_path):
    config = _small_config(tmp_path)
    mismatch = _run("--config", str(config))
    assert mismatch.returncode == 1, mismatch.stderr
    assert "FINGERPRINT MISMATCH: expected " + "0" * 64 in mismatch.stderr
    pinned = env_for(yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["cpu_numerics"])
    for var, value in pinned.items():  # the settings it ran under, re-executed with them from params.yaml
        assert f"{var}={value}" in mismatch.stdout
    assert "WARNING" not in mismatch.stdout  # the pinning took effect (torch's kernels, threads)
    sha = mismatch.stdout.split("fingerprint: ", 1)[1].split()[0]
    assert len(sha) == 64

    recorded = _run("--config", str(config), "--record")
    assert recorded.returncode == 0, recorded.stderr
    assert f"expected_sha256: {sha}" in config.read_text() and config.read_text().startswith("# a test copy")
    again = _run("--config", str(config))  # a fresh process computes the same hash: deterministic
    assert again.returncode == 0 and "matches the committed hash" in again.stdout, again.stdout + again.stderr


def test_bad_settings_are_refused(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("profile: tiny\n")
    with pytest.raises(SystemExit, match="no `cpu_numerics` block"):
        numerics.load_settings(params)
    params.write_text("cpu_numerics: {threads: 2, mkl: AVX2}\n")
    with pytest.raises(ValueError, match=r"cpu_numerics: unknown key\(s\) \['mkl'\]"):
        numerics.load_settings(params)
    with pytest.raises(SystemExit, match="--record writes the hash of the pinned settings only"):
        fingerprint.main(["--set", "mkl_cbwr=COMPATIBLE", "--record", "--config", str(_small_config(tmp_path))])


def test_mismatches_name_what_is_not_pinned(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    problems = mismatches({"mkl_cbwr": "AVX2"})
    assert problems == ["MKL_CBWR='AUTO', pinned 'AVX2'"]


def test_vendor_note_names_why_only_intel_cpus_can_match():
    assert fingerprint.vendor_note("GenuineIntel", "AVX2") is None
    assert fingerprint.vendor_note("AuthenticAMD", "COMPATIBLE") is None  # the branch MKL honours everywhere
    note = fingerprint.vendor_note("AuthenticAMD", "AVX2")
    assert "MKL_CBWR=AVX2 on Intel CPUs only" in note and "AuthenticAMD" in note
    for setting in ("AVX2", "COMPATIBLE"):  # e.g. ARM: neither MKL nor ATen's avx2 apply, whatever the setting
        assert "no x86 vendor" in fingerprint.vendor_note("", setting)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((set(line.split(":", 1)[1].split()) for line in handle if line.startswith("flags")), set())
    except OSError:
        return set()


def test_this_cpu_computes_the_committed_fingerprint():
    """The cross-machine check (issue 18): `make fingerprint` in full must print the committed hash on every Intel
    x86-64 CPU with AVX2. Two Intel models agree (this project's Xeon and an emulated Haswell, docs/
    reproducibility.md); on other vendors MKL ignores MKL_CBWR=AVX2 (measured), so there the test says so and stops."""
    vendor = fingerprint.cpu_vendor()
    if platform.machine() != "x86_64" or vendor not in fingerprint.PINNABLE_VENDORS or "avx2" not in _cpu_flags():
        pytest.skip(f"the committed fingerprint is for Intel x86-64 CPUs with AVX2; this CPU is "
                    f"{vendor or 'of unknown vendor'} ({platform.machine()}): docs/reproducibility.md")
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches the committed hash" in result.stdout, result.stdout
