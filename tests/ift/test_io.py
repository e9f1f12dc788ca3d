"""Atomic writes: a failure mid-write leaves the previous file (or nothing), never a partial one."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ift import io


def test_write_json_atomic_roundtrip_and_permissions(tmp_path):
    target = io.write_json_atomic(tmp_path / "a" / "r.json", {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # sorted keys: stable bytes
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & stat.S_IRGRP  # not mkstemp's private 0600


def test_failed_write_keeps_previous_content_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    io.write_json_atomic(target, {"ok": 1})

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        io.write_json_atomic(target, {"ok": 2, "padding": "x" * 10000})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_directory_replaces_whole_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with io.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with io.atomic_directory(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with io.atomic_directory(target) as tmp:
        (tmp / "other").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["other"]


def test_write_png_atomic_writes_a_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = io.write_png_atomic(figure, tmp_path / "p.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
