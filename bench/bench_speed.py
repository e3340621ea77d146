"""Training speed per model against this machine's fp32 matmul peak, measured side by side in one run.

Each model trains through its own `model(x, y)` loss path in a plain loop (forward, backward, grad clip, the
product's AdamW), on the same batches. The models take turns step by step, and a 1024x1024 fp32 matmul (the peak)
is timed between steps, so that load from other processes on a shared machine falls on all of them alike.
With --ref REV, every model is also built from the gptoss package at git revision REV (default: the commit before
the CPU speed work) with identical initial weights, trained with that revision's optimizer settings (unfused AdamW
on the CPU), and timed in the same rotation; its loss curve must match the current one within --tol.
With --compile, every model also trains compiled (gptoss.compile_model, as `train --compile` runs it) from the same
weights in the same rotation (path "comp"); its speed is given against the eager "now" path.
With --parts, the output layer alone (unembedding matmul + cross-entropy, forward and backward, at each model's width
and vocabulary) is timed in the same rotation, and each model's step is split into that share and the rest: the rest's
% of peak is the part of the model where the architectures differ (the output layer is the same code for both).
With --noise-floor, each reference model is also trained again (untimed) with another thread count: a change exact
in real arithmetic that reorders float sums. How far that moves the reference's own curve is the floor below which
a difference from it means nothing; a curve within twice that floor passes too. (A top-k router turns last-bit
differences into different expert choices: gptoss d256 moves by about 3e-3 in 40 steps this way, gpt2 by 7e-5.)

Usage: python bench/bench_speed.py [--model 'LABEL=ARCH/PRESET,field=value,...' ...] [--steps 50] [--threads 2]
       [--batch 8] [--seq-len 256] [--vocab 10571 | --data DIR] [--ref REV | --ref none] [--noise-floor]
       [--variants ladder | leave-one-out | NAME,... [--variant-preset cpu-tiny]] [--compile]
       [--malloc keep | default] [--parts]
--model is repeatable and takes any preset and config overrides; --variants adds the component ladder's mixes.
Exit status 1 when a loss curve differs from the reference revision's by more than --tol.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# The 2-core box is shared: busy-waiting OpenMP workers slow down badly whenever a core is taken (see bench_models.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptoss.output import linear_cross_entropy  # noqa: E402
from orchestrator.allocator import keep_freed_memory  # noqa: E402

DEFAULT_MODELS = [
    "gpt2 d256 4L=gpt2/cpu-small,n_layers=4",
    "gptoss d256 4L 4e top-2=gptoss/cpu-small,n_layers=4",
    "gptoss cpu-tiny=gptoss/cpu-tiny",
    "gpt2 cpu-tiny=gpt2/cpu-tiny",  # the dense GPT-2 of cpu-tiny's width: the per-FLOP efficiency to match at d128
]
DEFAULT_REF = "3c42bd8"  # main before the CPU speed work (issue 12)
SHARED = REPO.parent / "shared" / "data"


@dataclass
class Run:
    label: str
    path: str  # "now" or "ref"
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    initial: Optional[torch.nn.Module] = None  # an untrained copy (reference runs), for --noise-floor


def fail(message: str) -> None:
    print(f"bench_speed: {message}", file=sys.stderr)
    sys.exit(2)


def parse_model(spec: str) -> tuple[str, str, str, dict]:
    """'LABEL=ARCH/PRESET,field=value,...' (LABEL= optional) -> (label, arch, preset, overrides)."""
    label, sep, body = spec.partition("=")
    if not sep or "/" in label:  # no label: the first '=' belongs to an override
        label, body = "", spec
    head, *pairs = re.split(r",(?=\s*\w+=)", body)  # a comma inside a value (a list) does not split
    if "/" not in head:
        fail(f"--model {spec!r}: expected ARCH/PRESET first, e.g. gptoss/cpu-tiny,n_layers=2")
    arch, preset = head.split("/", 1)
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--model {spec!r}: override {pair!r} is not field=value")
        try:
            overrides[key.strip()] = ast.literal_eval(
                {"true": "True", "false": "False", "null": "None"}.get(value, value)
            )
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value  # a plain string
    return label or body, arch, preset, overrides


def matmul_gflops(a: torch.Tensor, b: torch.Tensor, reps: int = 3) -> float:
    """Best of `reps` timings of one square fp32 matmul, in GFLOP/s."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * a.shape[0] ** 3 / best / 1e9


def text_batches(steps: int, batch: int, seq_len: int, vocab: int, text_mb: float) -> tuple[list, str]:
    """Batches from the shared TinyStories text: o200k_harmony tokens, compacted to dense ids in order of appearance."""
    from data_pipeline import get_encoding

    need = steps * batch * (seq_len + 1)
    with open(SHARED / "tinystories" / "train.txt", encoding="utf-8") as f:
        text = f.read(int(text_mb * 2**20))
    ids = np.asarray(get_encoding("o200k_harmony", SHARED / "tiktoken").encode_ordinary(text), dtype=np.int64)
    _, first, dense = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(len(first))
    ids = rank[dense]
    if len(first) > vocab:
        fail(f"the text holds {len(first)} distinct tokens, more than --vocab {vocab}; raise --vocab")
    if len(ids) < need:
        fail(f"{text_mb} MB of text gives {len(ids)} tokens, fewer than the {need} needed; raise --text-mb")
    windows = torch.from_numpy(ids[:need]).view(steps, batch, seq_len + 1)
    return [
        (w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows
    ], f"TinyStories text, {len(first):,} distinct o200k tokens in a {vocab:,}-row vocabulary"


def data_batches(data: str, steps: int, batch: int, seq_len: int) -> tuple[list, int, str]:
    from data_pipeline import TokenWindows, load_manifest

    vocab = int(load_manifest(data)["vocab_size"])
    windows = TokenWindows(data, "train", seq_len, seed=0)
    return [windows.batch(i, batch) for i in range(steps)], vocab, f"prepared data {data}, vocabulary {vocab:,}"


def load_ref_package(rev: str):
    """The gptoss package as it was at git revision `rev`, imported under its own name next to the current one."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "gptoss"], capture_output=True)
    if archive.returncode:
        message = archive.stderr.decode(errors="replace").strip().splitlines()
        fail(
            f"--ref {rev}: {message[-1] if message else 'git archive failed'}; give a revision of this repository "
            f"or --ref none"
        )
    tmp = Path(tempfile.mkdtemp(prefix="bench-speed-ref-"))
    name = "gptoss_at_" + re.sub(r"\W", "_", rev)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "gptoss").rename(tmp / name)  # the package uses relative imports only, so it works under any name
    sys.path.insert(0, str(tmp))
    return importlib.import_module(name)


@dataclass
class OutputLayerRun:
    """--parts: the output layer alone at one width, on random hidden states (the timing does not depend on them)."""

    label: str
    weight: torch.Tensor
    hidden: torch.Tensor
    path: str = "out"
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def output_layer_runs(models: dict, batch: int, seq_len: int) -> dict[tuple[int, int], OutputLayerRun]:
    """One OutputLayerRun per distinct (d_model, vocab_size) among the models, keyed by it."""
    parts = {}
    for model in models.values():
        key = (model.config.d_model, model.config.vocab_size)
        if key not in parts:
            generator = torch.Generator().manual_seed(0)
            weight = (0.02 * torch.randn(key[1], key[0], generator=generator)).requires_grad_()
            hidden = torch.randn(batch * seq_len, key[0], generator=generator).requires_grad_()
            parts[key] = OutputLayerRun(f"output layer d{key[0]} V{key[1]}", weight, hidden)
    return parts


def run_step(run, x: torch.Tensor, y: torch.Tensor) -> float:
    """One timed unit of the rotation: a training step, or (--parts) the output layer's forward and backward."""
    if run.path != "out":
        return train_step(run, x, y, 1.0)
    run.weight.grad = run.hidden.grad = None
    loss = linear_cross_entropy(run.hidden, run.weight, y.reshape(-1))
    loss.backward()
    return loss.item()


def max_loss_diff(losses: list[float], other: list[float]) -> float:
    """The largest step-by-step difference between two loss curves (over the steps both have)."""
    return max(abs(p - q) for p, q in zip(losses, other))


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, clip: float) -> float:
    _, loss = run.model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss.item()


def variant_specs(names: str, preset: str) -> list[tuple[str, str, str, dict]]:
    """--variants: (label, arch, preset, overrides) per named variant of gptoss/variants.py (groups expanded)."""
    from gptoss.variants import expand_variants, variant_overrides

    try:
        return [
            (f"{name} {preset}", "gptoss", preset, variant_overrides(name))
            for name in expand_variants([n.strip() for n in names.split(",") if n.strip()])
        ]
    except ValueError as err:
        fail(f"--variants: {err}")


def build_runs(specs: list, vocab: int, lr: float, ref, compiled: bool = False) -> tuple[list[Run], dict, list[str]]:
    from gptoss import build_model, compile_model
    from orchestrator.config import TrainConfig
    from orchestrator.optimizer import build_optimizer

    runs, fpt, notes = [], {}, []
    for spec in specs:
        label, arch, preset, overrides = parse_model(spec) if isinstance(spec, str) else spec
        overrides.setdefault("vocab_size", vocab)
        torch.manual_seed(0)
        try:
            model = build_model(arch, preset, **overrides)
        except ValueError as err:
            fail(f"--model {spec!r}: {err}")
        cfg = TrainConfig(arch=arch, preset=preset, lr=lr)
        runs.append(Run(label, "now", model, build_optimizer(model, cfg, torch.device("cpu"))))
        fpt[label] = model
        if compiled:  # the same weights again, through torch.compile as `train --compile` runs it
            twin = copy.deepcopy(model)
            runs.append(Run(label, "comp", compile_model(twin), build_optimizer(twin, cfg, torch.device("cpu"))))
        if ref is None:
            continue
        try:
            old = ref.build_model(arch, preset, **overrides)
            old.load_state_dict(model.state_dict())
        except (ValueError, RuntimeError, TypeError) as err:
            notes.append(f"{label}: no reference run ({str(err).splitlines()[0]})")
            continue
        runs.append(Run(label, "ref", old, ref_optimizer(old, cfg), initial=copy.deepcopy(old)))
    return runs, fpt, notes


def ref_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """The reference revision's optimizer: unfused AdamW, weight decay on its decay_param_names only."""
    decay = set(model.decay_param_names())
    groups = [
        dict(params=[p for n, p in model.named_parameters() if n in decay], weight_decay=cfg.weight_decay),
        dict(params=[p for n, p in model.named_parameters() if n not in decay], weight_decay=0.0),
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def noise_floor(run: Run, batches: list, threads: int) -> float:
    """The largest loss difference between `run` and the same reference model trained again, untimed, from the same
    weights on the same batches with `threads` threads instead."""
    from orchestrator.config import TrainConfig

    model = copy.deepcopy(run.initial)
    again = Run(run.label, "ref", model, ref_optimizer(model, TrainConfig(lr=run.optimizer.defaults["lr"])))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        losses = [train_step(again, x, y, 1.0) for x, y in batches[: len(run.losses)]]
    finally:
        torch.set_num_threads(before)
    return max_loss_diff(run.losses, losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="LABEL=ARCH/PRESET,field=value,... (repeatable)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=10571, help="vocabulary rows with the shared text (the study's)")
    parser.add_argument("--text-mb", type=float, default=2.0)
    parser.add_argument("--data", default=None, help="a prepared data directory instead of the shared text")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ref", default=DEFAULT_REF, help="git revision to compare against, or 'none'")
    parser.add_argument("--tol", type=float, default=1e-3, help="largest loss difference allowed against --ref")
    parser.add_argument("--warmup", type=int, default=3, help="steps per model left out of the timings")
    parser.add_argument(
        "--variants",
        default=None,
        help="also (or, without --model, only) these gptoss variants, e.g. 'ladder' or "
        "'gptoss-no-moe,+swiglu' (the component ladder's mixes, gptoss/variants.py)",
    )
    parser.add_argument("--variant-preset", default="cpu-tiny", help="the gptoss preset the variants are built on")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also train each model compiled (gptoss.compile_model, as `train --compile`), from the "
        "same weights in the same rotation; its first step (the compile) is reported apart",
    )
    parser.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: the allocator settings training uses (orchestrator/allocator.py, for every run "
        "here, the reference too); default: the C library's own",
    )
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="also train each reference model again with another thread count (untimed) and accept "
        "differences within twice how far that moves it",
    )
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also time the output layer alone (matmul + cross-entropy, fwd and bwd) at each width in "
        "the same rotation, and report each model's step as that share and the rest",
    )
    args = parser.parse_args()
    if args.steps <= args.warmup:
        fail(f"--steps must exceed --warmup ({args.warmup}), got {args.steps}")
    specs = args.model or ([] if args.variants else DEFAULT_MODELS)
    if args.variants:
        specs = specs + variant_specs(args.variants, args.variant_preset)
    torch.set_num_threads(args.threads)
    kept = args.malloc == "keep" and keep_freed_memory()

    from gptoss import flops_per_token

    if args.data:
        batches, vocab, source = data_batches(args.data, args.steps, args.batch, args.seq_len)
    else:
        batches, source = text_batches(args.steps, args.batch, args.seq_len, args.vocab, args.text_mb)
        vocab = args.vocab
    ref = None if args.ref.lower() == "none" else load_ref_package(args.ref)
    runs, models, notes = build_runs(specs, vocab, args.lr, ref, compiled=args.compile)
    fpt = {label: flops_per_token(model, args.seq_len) for label, model in models.items()}
    parts = output_layer_runs(models, args.batch, args.seq_len) if args.parts else {}
    rotation = runs + list(parts.values())

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"allocator: {'freed memory kept (as in training)' if kept else 'the C library default'}"
    )
    print(
        f"batch {args.batch} x {args.seq_len}, {args.steps} steps per model (first {args.warmup} untimed), "
        f"AdamW lr {args.lr}, {source}"
    )
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    matmul_gflops(a, b)
    peaks = []
    try:
        from tqdm import tqdm

        steps = tqdm(range(args.steps), desc="steps", leave=False)
    except ImportError:
        steps = range(args.steps)
    for step in steps:
        x, y = batches[step]
        peaks.append(matmul_gflops(a, b))
        turn = step % len(rotation)
        for run in rotation[turn:] + rotation[:turn]:  # rotate, so no run always follows the same one
            start = time.perf_counter()
            run.losses.append(run_step(run, x, y))
            run.times.append(time.perf_counter() - start)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")

    floors = {}
    other_threads = 1 if args.threads > 1 else 2
    if args.noise_floor:
        for run in (r for r in runs if r.path == "ref"):
            floors[run.label] = noise_floor(run, batches, other_threads)
    peak_median, peak_best = statistics.median(peaks), max(peaks)
    print(
        f"fp32 matmul peak (1024x1024, {args.threads} threads), {len(peaks)} samples between steps: "
        f"median {peak_median:.0f} GFLOP/s, best {peak_best:.0f}"
    )
    tokens = args.batch * args.seq_len
    header = (
        f"{'model':28s} {'path':4s} {'tokens/s med':>12s} {'best':>7s} {'GFLOP/s':>8s} {'% peak med':>10s} {'best':>5s}"
    )
    print(header + f" {'loss@last':>9s} {'vs ref':>7s}")
    by_label = {}
    for run in runs:
        by_label.setdefault(run.label, {})[run.path] = run
    mismatch = False
    for label, pair in by_label.items():
        for path in ("ref", "now", "comp"):
            run = pair.get(path)
            if run is None:
                continue
            timed = run.times[args.warmup :]
            t_med, t_best = statistics.median(timed), min(timed)
            flops_med, flops_best = fpt[label] * tokens / t_med, fpt[label] * tokens / t_best
            line = (
                f"{label[:28]:28s} {path:4s} {tokens / t_med:12,.0f} {tokens / t_best:7,.0f} {flops_med / 1e9:8.1f} "
                f"{100 * flops_med / 1e9 / peak_median:9.0f}% {100 * flops_best / 1e9 / peak_best:4.0f}% "
                f"{run.losses[-1]:9.4f}"
            )
            if path == "now" and "ref" in pair:
                ref_run = pair["ref"]
                diff = max_loss_diff(run.losses, ref_run.losses)
                speedup = statistics.median(ref_run.times[args.warmup :]) / t_med
                floor = floors.get(label)
                ok = diff <= max(args.tol, 2 * (floor or 0.0))
                mismatch |= not ok
                line += f" {speedup:6.2f}x  max |loss diff| {diff:.1e} {'ok' if ok else 'MISMATCH'}"
                if floor is not None:
                    line += f" (ref's own noise {floor:.1e})"
            if path == "comp":  # not gated: compiled kernels reorder float sums, and the router amplifies that
                eager = pair["now"]
                diff = max_loss_diff(run.losses, eager.losses)
                line += (
                    f" {statistics.median(eager.times[args.warmup :]) / t_med:6.2f}x vs now, max |loss diff| "
                    f"{diff:.1e}; first step (compile) {run.times[0]:.0f} s"
                )
            print(line)
    if parts:
        print_parts(parts, by_label, models, fpt, tokens, args.warmup, peak_median)
    for note in notes:
        print(note)
    if ref is not None:
        print(f"ref = gptoss at {args.ref} with unfused AdamW; 'vs ref' = median ref step time / median step time")
    if floors:
        print(
            f"ref's own noise = max |loss diff| of the reference retrained with {other_threads} "
            f"thread(s) instead of {args.threads}; a curve passes within max(--tol, twice that)"
        )
    if mismatch:
        print(
            f"loss curves differ from --ref {args.ref} by more than --tol {args.tol}"
            + (" and twice the reference's own noise" if floors else ""),
            file=sys.stderr,
        )
        sys.exit(1)


def print_parts(parts: dict, by_label: dict, models: dict, fpt: dict, tokens: int, warmup: int, peak: float) -> None:
    """--parts: the output layer's own speed per width, then each model's step split into it and the rest."""
    print(
        "output layer alone (unembedding matmul + cross-entropy, forward and backward; 6 d V FLOPs per token), "
        "same rotation:"
    )
    out_med = {}
    for (d, vocab), part in parts.items():
        out_med[d, vocab] = statistics.median(part.times[warmup:])
        gflops = 6 * d * vocab * tokens / out_med[d, vocab] / 1e9
        print(
            f"  {part.label:26s} {out_med[d, vocab] * 1e3:7.1f} ms  {gflops:6.1f} GFLOP/s  {100 * gflops / peak:3.0f}% "
            f"of the median peak"
        )
    print(f"{'model':28s} {'path':4s} {'output layer share':>18s} {'rest: GFLOP/s':>13s} {'% peak':>6s}")
    for label, pair in by_label.items():
        config = models[label].config
        key = (config.d_model, config.vocab_size)
        for path in ("now", "comp"):
            if path not in pair:
                continue
            step_med = statistics.median(pair[path].times[warmup:])
            rest_flops = (fpt[label] - 6 * key[0] * key[1]) * tokens / (step_med - out_med[key]) / 1e9
            print(
                f"{label[:28]:28s} {path:4s} {100 * out_med[key] / step_med:17.0f}% {rest_flops:13.1f} "
                f"{100 * rest_flops / peak:5.0f}%"
            )
    print("(share = the output layer's median time alone / the model's median step; the rest includes the optimizer)")


if __name__ == "__main__":
    main()
