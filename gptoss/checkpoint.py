"""Checkpoints: model.safetensors + config.json (config fields and "arch"), written atomically; loading rebuilds the
model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .presets import config_from_dict, config_to_dict, model_from_config, unwrap_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with each shared tensor kept once (safetensors refuses aliases; e.g. gpt2's tied lm_head)."""
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride())
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors


def _default_file_mode() -> int:
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        # safetensors creates its file 0600; give every written file the mode a plain open() would (0644 usually).
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: dict[str, Any]) -> None:
    _write_atomically(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def save_checkpoint(model: nn.Module, out_dir: str | os.PathLike, extra: dict | None = None) -> None:
    """Write out_dir/model.safetensors and out_dir/config.json; other files in out_dir are left alone."""
    model = unwrap_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = unique_state_dict(model)
    _write_atomically(out_dir / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    config = config_to_dict(model.config)
    if extra is not None:
        config["extra"] = extra
    write_json(out_dir / CONFIG_NAME, config)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model saved in directory `path`, on map_location; tied weights are re-tied by construction."""
    path = Path(path)
    try:
        config = config_from_dict(json.loads((path / CONFIG_NAME).read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ValueError(
            f"checkpoint {path} has no readable {CONFIG_NAME} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); it is damaged, use another checkpoint"
        ) from None
    model = model_from_config(config)
    try:
        state = load_file(str(path / WEIGHTS_NAME))
    except (OSError, SafetensorError) as exc:
        raise ValueError(
            f"checkpoint {path / WEIGHTS_NAME} is damaged or truncated ({' '.join(str(exc).split())}); "
            f"use another checkpoint"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only aliases of a saved tensor (dropped on save) may be missing.
    aliases = set(model.state_dict()) - set(unique_state_dict(model))
    if unexpected or set(missing) - aliases:
        raise ValueError(
            f"checkpoint {path} does not match its config: missing {sorted(set(missing) - aliases)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.to(map_location)
