"""Checkpoint health on the driver: verify a training checkpoint before a run restores it, pick the newest valid one,
and refuse to resume on different data."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Optional

from orchestrator.run_dir import (
    MANIFEST_FILE,
    MODEL_CONFIG_FILE,
    OPTIMIZER_FILE,
    TRAIN_STATE_FILE,
    WEIGHTS_FILE,
    checkpoint_step,
)
from orchestrator.storage import Storage


def verify_checkpoint(storage: Storage, path: str) -> Optional[str]:
    """None if the checkpoint at `path` can be restored; otherwise why not (one short phrase).

    Reads every file a restore reads: the weights through safetensors, the optimizer through torch, the loop state and
    the data manifest as JSON. A checkpoint cut short by a full disk or a killed copy fails here, not in a worker.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    def read(name: str) -> bytes:
        with storage.fs.open_input_stream(f"{path}/{name}") as f:
            return f.read()

    for name in (MODEL_CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, TRAIN_STATE_FILE, MANIFEST_FILE):
        if not storage.exists(f"{path}/{name}"):
            return f"{name} is missing"
    try:
        for name in (MODEL_CONFIG_FILE, MANIFEST_FILE):
            json.loads(read(name))
        state = json.loads(read(TRAIN_STATE_FILE))
        if not isinstance(state, dict) or not {"step", "tokens"} <= set(state):
            return f"{TRAIN_STATE_FILE} lacks step/tokens"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"a JSON file is unreadable ({type(exc).__name__})"
    try:
        load_safetensors(read(WEIGHTS_FILE))
    except SafetensorError as exc:
        return f"{WEIGHTS_FILE} is damaged ({' '.join(str(exc).split())})"
    try:
        opt = torch.load(io.BytesIO(read(OPTIMIZER_FILE)), map_location="cpu", weights_only=False)
        if not isinstance(opt, dict) or "optimizer" not in opt:
            return f"{OPTIMIZER_FILE} holds no optimizer state"
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a cut file
        return f"{OPTIMIZER_FILE} is damaged ({type(exc).__name__})"
    return None


@dataclass
class CheckpointScan:
    """The checkpoints of a run directory, newest first, split into restorable and damaged ones."""

    valid: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def latest(self) -> Optional[str]:
        return self.valid[0] if self.valid else None


def scan_checkpoints(storage: Storage, paths: list[str]) -> CheckpointScan:
    scan = CheckpointScan()
    for path in sorted(paths, key=checkpoint_step, reverse=True):
        why = verify_checkpoint(storage, path)
        if why is None:
            scan.valid.append(path)
        else:
            scan.damaged.append((path, why))
    return scan


def read_checkpoint_manifest(storage: Storage, path: str) -> dict:
    return json.loads(storage.read_text(f"{path}/{MANIFEST_FILE}"))


def check_same_data(storage: Storage, checkpoint: str, manifest: dict, data_dir: str, run_name: str) -> None:
    """Refuse to continue a run on data other than the data its checkpoint was trained on (same ids, same tokens)."""
    from data_pipeline import data_identity

    saved = read_checkpoint_manifest(storage, checkpoint)
    if data_identity(saved) != data_identity(manifest):
        why = "a different token map (it was prepared again from other text or settings)"
    elif data_identity(saved, content=True) != data_identity(manifest, content=True):
        why = "the same token map but different tokens (it was prepared again from other text)"
    else:
        return
    raise ValueError(
        f"cannot resume run {run_name!r}: {data_dir} now holds {why} than its checkpoints were trained on; "
        f"pass --no-resume to start the run over (the old run is kept aside) or another --name"
    )
