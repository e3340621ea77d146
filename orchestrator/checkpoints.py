"""Checkpoint health on the driver: verify a training checkpoint before a run restores it, pick the newest valid one,
keep Ray Train's checkpoint snapshot consistent with what is on disk, and refuse to resume on different data."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Optional

from orchestrator.storage import Storage

# Ray Train V2 restores its checkpoint bookkeeping from this file in the run directory; an entry whose directory is
# gone makes TrainController.__init__ fail, and its "latest" entry is what ray.train.get_checkpoint() hands workers.
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
DAMAGED_PREFIX = "damaged-"
_STEP_RE = re.compile(r"checkpoint_(\d+)$")
# Files of a training checkpoint (as orchestrator.train_loop.save_train_checkpoint writes them); named here, not
# imported, so that the driver-side checks do not pull in the training loop.
_WEIGHTS, _MODEL_CONFIG, _OPTIMIZER, _STATE, _MANIFEST = (
    "model.safetensors",
    "config.json",
    "optimizer.pt",
    "train_state.json",
    "manifest.json",
)


def checkpoint_step(path: str) -> int:
    match = _STEP_RE.search(path.rstrip("/"))
    return int(match.group(1)) if match else -1


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

    for name in (_MODEL_CONFIG, _WEIGHTS, _OPTIMIZER, _STATE, _MANIFEST):
        if not storage.exists(f"{path}/{name}"):
            return f"{name} is missing"
    try:
        for name in (_MODEL_CONFIG, _MANIFEST):
            json.loads(read(name))
        state = json.loads(read(_STATE))
        if not isinstance(state, dict) or not {"step", "tokens"} <= set(state):
            return f"{_STATE} lacks step/tokens"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"a JSON file is unreadable ({type(exc).__name__})"
    try:
        load_safetensors(read(_WEIGHTS))
    except SafetensorError as exc:
        return f"{_WEIGHTS} is damaged ({' '.join(str(exc).split())})"
    try:
        opt = torch.load(io.BytesIO(read(_OPTIMIZER)), map_location="cpu", weights_only=False)
        if not isinstance(opt, dict) or "optimizer" not in opt:
            return f"{_OPTIMIZER} holds no optimizer state"
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a cut file
        return f"{_OPTIMIZER} is damaged ({type(exc).__name__})"
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
    return json.loads(storage.read_text(f"{path}/{_MANIFEST}"))


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


def repair_ray_snapshot(storage: Storage, run_path: str, keep: list[str]) -> bool:
    """Drop from Ray Train's checkpoint snapshot every checkpoint not in `keep` (damaged, moved aside or deleted by
    hand) and point its "latest" at the newest one kept. Returns True if the file changed."""
    path = f"{run_path}/{RAY_SNAPSHOT_FILE}"
    if not storage.exists(path):
        return False
    snap = json.loads(storage.read_text(path))
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in keep}

    def kept(entry) -> bool:
        return bool(entry) and entry.get("checkpoint_dir_name") in names

    results = snap.get("checkpoint_results", [])
    indices = snap.get("checkpoint_report_indices", [])
    pairs = [(r, i) for r, i in zip(results, indices) if kept(r)]
    pending = [
        (r, v)
        for r, v in zip(snap.get("pending_training_results", []), snap.get("pending_validation_specs", []))
        if kept(r)
    ]
    new = dict(snap)
    new["checkpoint_results"] = [r for r, _ in pairs]
    new["checkpoint_report_indices"] = [i for _, i in pairs]
    new["pending_training_results"] = [r for r, _ in pending]
    new["pending_validation_specs"] = [v for _, v in pending]
    for key in (
        "validated_checkpoint_dir_names",
        "timed_out_validation_checkpoint_dir_names",
        "failed_validation_checkpoint_dir_names",
    ):
        if key in new:
            new[key] = [n for n in new[key] if n in names]
    if not kept(snap.get("latest_checkpoint_result")):
        newest = max(new["checkpoint_results"], key=lambda r: checkpoint_step(r["checkpoint_dir_name"]), default=None)
        new["latest_checkpoint_result"] = newest
    if new == snap:
        return False
    storage.write_text(path, json.dumps(new))
    return True
