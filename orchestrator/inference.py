"""Using a trained checkpoint: locate and open it, generate text through its tokenizer, evaluate it on a split."""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from orchestrator.evaluation import evaluate_windows
from orchestrator.run_dir import MANIFEST_FILE, TRAIN_STATE_FILE, local_checkpoint_dir


@dataclass
class CheckpointBundle:
    path: str
    model: torch.nn.Module
    manifest: dict
    state: dict


def find_checkpoint(path: str) -> str:
    """A checkpoint directory as given, or the best (lowest val loss) checkpoint of a run directory."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint or run directory at {path}")
    found = local_checkpoint_dir(path)
    if found is None:
        raise ValueError(
            f"{path} holds no checkpoint (model.safetensors + config.json); pass a checkpoint directory or a run "
            "directory"
        )
    return found


@contextmanager
def open_checkpoint(path: str, storage=None) -> Iterator[CheckpointBundle]:
    """Open a checkpoint on local disk, or download one from a storage URI first."""
    from gptoss import load_checkpoint

    with _local_copy(path, storage) as local:
        ckpt = find_checkpoint(local)
        model = load_checkpoint(ckpt, map_location="cpu")
        model.eval()
        manifest_path = os.path.join(ckpt, MANIFEST_FILE)
        if not os.path.exists(manifest_path):
            raise ValueError(f"{ckpt} has no {MANIFEST_FILE}; it was not written by `python cli.py train`")
        manifest = _read_json(manifest_path)
        _check_manifest_fits_model(ckpt, manifest, model)
        state = {}
        if os.path.exists(os.path.join(ckpt, TRAIN_STATE_FILE)):
            state = _read_json(os.path.join(ckpt, TRAIN_STATE_FILE))
        yield CheckpointBundle(ckpt, model, manifest, state)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}); the checkpoint is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; the checkpoint is damaged")
    return data


@contextmanager
def _local_copy(path: str, storage=None) -> Iterator[str]:
    if "://" not in path and (storage is None or storage.is_local):
        yield path
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(path) if "://" in path else (storage.fs, path)
    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        pafs.copy_files(root, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield tmp


def generate_text(
    bundle: CheckpointBundle,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: Optional[int] = 50,
    top_p: Optional[float] = None,
    seed: Optional[int] = 0,
    tokenizer_dir: Optional[str] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> str:
    """Prompt plus the generated continuation, decoded through the checkpoint's tokenizer and compaction map.

    Any prompt encodes: pieces the training data never had get the tokenizer's extra ids and zero rows in a copy of
    the model, exactly as in the Hugging Face export (so both generate the same); warn gets one line naming the
    words that hold them. Only the model's own ids are generated."""
    from data_pipeline import load_tokenizer
    from gptoss import generate

    tokenizer = load_tokenizer(bundle.manifest, tokenizer_dir=tokenizer_dir)
    prompt_ids = tokenizer.encode(prompt, on_unknown="extend") if prompt else [tokenizer.eot_id]
    max_len = getattr(bundle.model.config, "max_seq_len", None)
    if max_len is not None and len(prompt_ids) + max_new_tokens > max_len:
        raise ValueError(
            f"prompt ({len(prompt_ids)} tokens) + --max-tokens {max_new_tokens} exceeds the model's "
            f"max_seq_len {max_len}; ask for fewer tokens"
        )
    model = bundle.model
    if max(prompt_ids) >= tokenizer.vocab_size:
        if warn is not None:
            warn(tokenizer.unknown_warning(prompt))
        model = model_with_extra_ids(model, tokenizer)
    new_ids = generate(
        model,
        prompt_ids,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_token_id=tokenizer.eot_id,
        seed=seed,
        vocab_limit=tokenizer.vocab_size,
    )
    new_ids = [t for t in new_ids if t != tokenizer.eot_id]
    # Decoded together: a character split between the prompt's last token and the first new one stays whole.
    return tokenizer.decode((prompt_ids if prompt else []) + new_ids)


def model_with_extra_ids(model: torch.nn.Module, tokenizer) -> torch.nn.Module:
    """A copy of the model that accepts every id the tokenizer emits (zero rows for its extra ids; the export's)."""
    import copy

    from gptoss import add_vocab_rows

    return add_vocab_rows(copy.deepcopy(model), tokenizer.extra_size)


def check_compatible(bundle: CheckpointBundle, data_manifest: dict, data_dir: str) -> None:
    """A checkpoint can only be scored on data in its own token space: same tokenizer, vocab and the same map from
    its ids to tokens (two compact vocabularies of one size can map every id to a different token)."""
    from data_pipeline import data_identity

    mine, theirs = bundle.manifest, data_manifest
    for key in ("tokenizer", "vocab_size", "compacted"):
        if mine.get(key) != theirs.get(key):
            raise ValueError(
                f"checkpoint {bundle.path} was trained with {key}={mine.get(key)!r} but {data_dir} has "
                f"{key}={theirs.get(key)!r}; evaluate on data prepared with the same tokenizer settings"
            )
    if data_identity(mine) != data_identity(theirs):
        raise ValueError(
            f"checkpoint {bundle.path} and {data_dir} map token ids to different tokens (different compact "
            f"vocabularies of the same size); evaluate on data prepared from the model's training text"
        )
    model_vocab = bundle.model.config.vocab_size
    if model_vocab != theirs.get("vocab_size"):
        raise ValueError(f"checkpoint vocab {model_vocab} does not match {data_dir} vocab {theirs.get('vocab_size')}")


def _check_manifest_fits_model(ckpt: str, manifest: dict, model) -> None:
    """The checkpoint's own data manifest decodes its ids: its map must cover exactly the model's vocabulary."""
    vocab = model.config.vocab_size
    mapping = manifest.get("compact_to_original")
    if manifest.get("vocab_size") != vocab or (
        manifest.get("compacted") and (mapping is None or len(mapping) != vocab)
    ):
        raise ValueError(
            f"{ckpt}/{MANIFEST_FILE} does not describe this model's {vocab}-token vocabulary "
            f"(vocab_size {manifest.get('vocab_size')}, map of "
            f"{len(mapping) if mapping is not None else 'no'} entries); the checkpoint is damaged"
        )


def evaluate_checkpoint(
    path: str,
    data_dir: str,
    split: str = "validation",
    batch_size: int = 16,
    seq_len: Optional[int] = None,
    progress: bool = True,
    verify_data: bool = True,
) -> dict:
    """Loss, perplexity and bits/byte of a checkpoint over every target token of a split (one process): the full
    windows and a shorter last one over the tail; `tokens` and `split_fraction` say what was scored."""
    from data_pipeline import TokenWindows, load_manifest, token_byte_lengths
    from data_pipeline.manifest import check_shards

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if seq_len is not None and seq_len < 1:
        raise ValueError(f"--seq-len must be >= 1, got {seq_len}")
    data_dir = os.path.abspath(data_dir)
    manifest = load_manifest(data_dir)
    if split not in manifest.get("splits", {}):
        raise ValueError(f"split {split!r} not in {data_dir}; choose one of {sorted(manifest.get('splits', {}))}")
    if verify_data:
        check_shards(data_dir, manifest, splits=[split])
    with open_checkpoint(path) as bundle:
        check_compatible(bundle, manifest, data_dir)
        seq_len = seq_len or int(bundle.state.get("config", {}).get("seq_len", 256))
        if seq_len > bundle.model.config.max_seq_len:
            raise ValueError(f"--seq-len {seq_len} is beyond the model's max_seq_len {bundle.model.config.max_seq_len}")
        windows = TokenWindows(data_dir, split, seq_len)
        byte_lengths = torch.as_tensor(token_byte_lengths(manifest), dtype=torch.int64)
        batches = windows.eval_batches(batch_size, None)
        if progress:
            from tqdm.auto import tqdm

            plan = windows.eval_plan()
            batches = tqdm(
                batches,
                total=math.ceil(plan["full_windows"] / batch_size) + plan["tail_window"],
                desc=f"evaluate {split}",
                unit="batch",
            )
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = bundle.model.to(device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        result = evaluate_windows(model, batches, byte_lengths.to(device), device, autocast, 1)
        return dict(
            checkpoint=bundle.path,
            split=split,
            loss=result["loss"],
            perplexity=math.exp(result["loss"]),
            bits_per_byte=result["bpb"],
            tokens=result["tokens"],
            windows=result["windows"],
            split_fraction=result["tokens"] / max(1, windows.total_tokens - 1),
            seq_len=seq_len,
        )


def evaluate_on_cluster(
    address: str,
    path: str,
    data_dir: str,
    split: str = "validation",
    batch_size: int = 16,
    seq_len: Optional[int] = None,
    verbose: bool = False,
    verify_data: bool = True,
) -> dict:
    """evaluate_checkpoint as one Ray task on the cluster (a GPU node when it has one); paths must be shared."""
    from raysetup import init_ray

    info = init_ray(address, verbose)
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if info.gpus >= 1 else 0, max_retries=0)(evaluate_checkpoint)
    return ray.get(
        task.remote(os.path.abspath(path), os.path.abspath(data_dir), split, batch_size, seq_len, False, verify_data)
    )


def _check_export_target(out_dir: str) -> None:
    """The output must be a new or empty directory; anything else is one line naming the path."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} is a file; export writes a directory there: pass a new or empty directory path")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new output directory")
    parent = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{parent} is a file, so the directory {out_dir} cannot be made in it; pass another path")


def export_checkpoint(path: str, out_dir: str) -> str:
    """Hugging Face directory for a checkpoint: model, generation config and a tokenizer that gives the model's own
    ids (any text encodes; see data_pipeline/hf_tokenizer.py), plus our tokenizer_manifest.json; returns a summary."""
    import shutil

    from data_pipeline import load_tokenizer
    from data_pipeline.hf_tokenizer import write_hf_tokenizer
    from gptoss import export_hf

    _check_export_target(out_dir)
    with open_checkpoint(path) as bundle:
        tokenizer = load_tokenizer(bundle.manifest)
        tmp = f"{out_dir.rstrip('/')}.tmp-export"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            export_hf(bundle.model, tmp, eos_token_id=tokenizer.eot_id, extra_vocab_rows=tokenizer.extra_size)
            write_hf_tokenizer(tokenizer, tmp, bundle.model.config.max_seq_len)
            # Our own tools (and tiktoken users) read the compaction map from here.
            with open(os.path.join(tmp, "tokenizer_manifest.json"), "w") as f:
                json.dump(bundle.manifest, f)
            if os.path.exists(out_dir):
                os.rmdir(out_dir)
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        arch = bundle.model.config.arch
    extra = (
        f"; {tokenizer.extra_size} extra ids for pieces the training data never had (zero rows, never generated)"
        if tokenizer.extra_size
        else ""
    )
    return (
        f"exported {arch} checkpoint {bundle.path} -> {out_dir} (Hugging Face format with tokenizer.json: "
        f"{tokenizer.vocab_size} trained ids{extra})"
    )
