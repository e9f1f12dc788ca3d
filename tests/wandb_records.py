"""Read offline W&B runs back: the records of ``wandb/offline-run-*/run-<id>.wandb``.

The W&B SDK (0.31) ships no Python reader any more (its sync is in wandb-core), so the file is read here: the
LevelDB log format the SDK writes (a 7-byte header ``:W&B`` + magic + version, then 32 KiB blocks of chunks, each
with a 7-byte header: CRC32C, length, type FULL/FIRST/MIDDLE/LAST), each record a ``wandb_internal_pb2.Record``
protobuf parsed with wandb's own generated classes.
"""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    """Every ``Record`` in one ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out, pending, pos = [], b"", 7
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # the rest of a block too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        pos += CHUNK_HEADER
        chunk, pos = data[pos:pos + length], pos + length
        if kind == FULL:
            whole = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            whole = pending + chunk
        else:  # zero padding at the end of the file
            break
        record = wandb_internal_pb2.Record()
        record.ParseFromString(whole)
        out.append(record)
    return out


def _items(update) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


def read_run(path: str | Path) -> dict:
    """One offline run as {"id", "name", "group", "tags", "job_type", "project", "config", "summary"}; config and
    summary merge every update in order (the run's own, then e.g. transformers' callback's)."""
    run: dict = {"config": {}, "summary": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, tags=list(r.tags), job_type=r.job_type,
                       project=r.project)
            run["config"].update(_items(r.config.update))
        elif kind == "config":
            run["config"].update(_items(record.config.update))
        elif kind == "summary":
            run["summary"].update(_items(record.summary.update))
    run["config"].pop("_wandb", None)
    return run


def offline_runs(runs_dir: str | Path) -> dict[str, dict]:
    """Every offline run under ``runs_dir`` (the folder holding ``offline-run-*``), by name."""
    found = [read_run(path) for path in sorted(glob.glob(str(Path(runs_dir) / "offline-run-*" / "run-*.wandb")))]
    by_name = {run["name"]: run for run in found}
    assert len(by_name) == len(found), f"two runs share a name: {[run['name'] for run in found]}"
    return by_name
