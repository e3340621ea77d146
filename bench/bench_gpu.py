"""GPU benchmark on one CUDA device with torch only (no Ray): tokens/s, MFU, memory, compile, bf16 vs fp32, \
MoE dispatch.

Usage: python bench/bench_gpu.py [--data DIR] [--out bench_gpu.json] [--attn sdpa,flex] [--experts loop,grouped]
       [--archs gpt2,gptoss] [--presets cpu-tiny,seed-6l,seed-12l] [--compile off,on] [--seq-len 512]
       [--micro-batches 64,32,16,8,4,2,1] [--steps 10] [--budget-s 300]

Every (arch, preset, attention, experts, compile) case runs the training loop's step (bf16 autocast, backward, grad
clipping, fused AdamW) at the largest micro-batch of the list that fits (CUDA OOM -> the next smaller one; a compiled
case starts from its eager case's batch): warm-up steps, then --steps timed ones. In order: the eager cases (gptoss
ones also measure the share of the step spent in MoE routing/dispatch), bf16 vs fp32 over the first PRECISION_STEPS
steps of cpu-tiny, the cross-checks of the optional paths asked for (FlexAttention vs SDPA, grouped vs loop experts,
on this device), then the compiled cases. A case that would start after --budget-s seconds is skipped and says so,
which keeps the default run under 8 minutes on one H100. One table is printed at the end and written as JSON to --out.
Without CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptoss import PRESETS, build_model, compile_model, flops_per_token  # noqa: E402
from gptoss.model_gptoss import ATTN_IMPLS, EXPERT_IMPLS  # noqa: E402
from gptoss.moe import MoEMLP, swiglu  # noqa: E402
from orchestrator.config import TrainConfig  # noqa: E402  (plain dataclass; the chain imports no Ray)
from orchestrator.optimizer import build_optimizer  # noqa: E402
from orchestrator.train_loop import peak_flops  # noqa: E402

ARCHS = ("gpt2", "gptoss")
DEFAULT_PRESETS = ("cpu-tiny", "seed-6l", "seed-12l")
DEFAULT_MICRO_BATCHES = (64, 32, 16, 8, 4, 2, 1)
PRECISION_STEPS = 50
# bf16 keeps 8 significant bits (relative rounding 2^-9 per op). The CE is computed in fp32 from bf16 logits, so the
# step-0 losses agree to a fraction of a percent; over 50 AdamW steps the two runs drift apart by rounding only, which
# stays within a few tenths of a percent in practice. 2% of the fp32 loss leaves room for that drift while still
# catching real precision bugs (a loss or softmax computed in bf16, sinks or router logits overflowing), which move
# the curve by far more.
PRECISION_REL_TOL = 0.02
MOE_SHARE_ITERS = 10


# ----------------------------------------------------------------------------------------------
# The report: rows of measurements -> one table and the same as JSON (pure functions, tested on the CPU).


TABLE_COLUMNS = [  # (header, row key, format)
    ("arch", "arch", "{}"),
    ("preset", "preset", "{}"),
    ("attn", "attn", "{}"),
    ("experts", "experts", "{}"),
    ("compile", "compile", "{}"),
    ("micro-batch", "micro_batch", "{}"),
    ("tokens/s", "tokens_per_s", "{:,.0f}"),
    ("MFU", "mfu", "{:.1%}"),
    ("TFLOP/s", "tflops", "{:.1f}"),
    ("peak GiB", "peak_mem_gib", "{:.1f}"),
    ("MoE dispatch", "moe_dispatch_share", "{:.1%}"),
    ("warm-up s", "warmup_s", "{:.0f}"),
    ("status", "status", "{}"),
]


STATUS_WIDTH = 70  # longer error lines are cut in the table; the JSON keeps them whole


def format_cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(report: dict) -> str:
    """The printed summary: device line, one row per case, then the precision and cross-check results."""
    meta = report["meta"]
    lines = [
        f"device: {meta['device']} (bf16 peak {format_cell(meta.get('peak_tflops'), '{:.0f}')} TFLOP/s), "
        f"torch {meta['torch']}, data: {meta['data']}, seq_len {meta['seq_len']}, "
        f"{meta['steps']} timed steps per case, {meta['elapsed_s']:.0f} s in all"
    ]
    rows = [[format_cell(row.get(key), fmt)[:STATUS_WIDTH] for _, key, fmt in TABLE_COLUMNS] for row in report["rows"]]
    headers = [h for h, _, _ in TABLE_COLUMNS]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    for p in report["precision"]:
        if "error" in p:
            lines.append(f"bf16 vs fp32, {p['arch']}/{p['preset']}: {p['error']}")
            continue
        verdict = "OK" if p["ok"] else "FAIL"
        lines.append(
            f"bf16 vs fp32, {p['arch']}/{p['preset']}, first {p['steps']} steps: max |loss diff| "
            f"{p['max_rel_diff']:.2%} of the fp32 loss (step {p['worst_step']}), tolerance "
            f"{p['tolerance']:.0%}: {verdict}"
        )
    for c in report["checks"]:
        verdict = "" if c.get("ok") is None else (" OK" if c["ok"] else " FAIL")
        lines.append(f"check {c['name']}: {c['result']}{verdict}")
    return "\n".join(lines)


def compare_precision(fp32_losses: list[float], bf16_losses: list[float], tolerance: float = PRECISION_REL_TOL) -> dict:
    """Largest |bf16 - fp32| / fp32 loss over the steps, where it happened, and whether it is within tolerance."""
    if len(fp32_losses) != len(bf16_losses) or not fp32_losses:
        raise ValueError(f"need two equally long, non-empty loss curves, got {len(fp32_losses)} and {len(bf16_losses)}")
    rel = [
        abs(b - f) / abs(f) if math.isfinite(b) and math.isfinite(f) else math.inf
        for f, b in zip(fp32_losses, bf16_losses)
    ]
    worst = max(range(len(rel)), key=rel.__getitem__)
    return dict(
        steps=len(rel),
        max_rel_diff=rel[worst],
        worst_step=worst,
        tolerance=tolerance,
        ok=rel[worst] <= tolerance,
        fp32_losses=list(fp32_losses),
        bf16_losses=list(bf16_losses),
    )


def build_report(meta: dict, rows: list[dict], precision: list[dict], checks: list[dict]) -> dict:
    return dict(meta=meta, rows=rows, precision=precision, checks=checks)


def write_json(path: str, report: dict) -> None:
    """Atomically: a temporary file in the same directory, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench_gpu-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# Arguments.


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a prepared data directory (default: random tokens)")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument(
        "--attn", default="sdpa", help=f"gptoss attention paths to measure, from {','.join(ATTN_IMPLS)}"
    )
    parser.add_argument(
        "--experts", default="loop", help=f"gptoss expert paths to measure, from {','.join(EXPERT_IMPLS)}"
    )
    parser.add_argument("--compile", default="off,on", help="off, on or off,on")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--micro-batches", default=",".join(map(str, DEFAULT_MICRO_BATCHES)))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--precision-preset", default="cpu-tiny", help="the small model of the bf16 vs fp32 check")
    parser.add_argument("--precision-steps", type=int, default=PRECISION_STEPS)
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no case after this many seconds")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """One line saying what is wrong with the arguments, or None. Run before anything is measured."""
    for name, allowed in (
        ("archs", ARCHS),
        ("attn", ATTN_IMPLS),
        ("experts", EXPERT_IMPLS),
        ("compile", ("off", "on")),
    ):
        values = _csv(getattr(args, name))
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            return f"--{name} takes a comma-separated list from {', '.join(allowed)}; got {getattr(args, name)!r}"
    presets = _csv(args.presets)
    for arch in _csv(args.archs):
        bad = [p for p in presets if p not in PRESETS[arch]]
        if not presets or bad:
            return (
                f"--presets: unknown for {arch}: {', '.join(bad) or '(none given)'}; "
                f"allowed: {', '.join(sorted(PRESETS[arch]))}"
            )
    try:
        batches = [int(b) for b in _csv(args.micro_batches)]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        return f"--micro-batches takes comma-separated positive integers; got {args.micro_batches!r}"
    if args.seq_len < 1 or args.steps < 1 or args.precision_steps < 1:
        return "--seq-len, --steps and --precision-steps must be >= 1"
    for arch in _csv(args.archs):
        if args.precision_preset not in PRESETS[arch]:
            return f"--precision-preset: unknown for {arch}: {args.precision_preset}"
    too_long = [f"{a}/{p}" for a in _csv(args.archs) for p in presets if args.seq_len > PRESETS[a][p]["max_seq_len"]]
    if too_long:
        return f"--seq-len {args.seq_len} is beyond max_seq_len of {', '.join(too_long)}"
    if args.out is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        return f"--out: directory {os.path.dirname(os.path.abspath(args.out))} does not exist"
    if args.data is not None:
        from data_pipeline import load_manifest

        try:
            load_manifest(args.data)
        except ValueError as exc:
            return f"--data: {exc}"
    return None


def case_sort_key(case: dict) -> tuple:
    """Table order: by preset as listed in DEFAULT_PRESETS (others after), arch, defaults first, eager first."""
    preset_rank = DEFAULT_PRESETS.index(case["preset"]) if case["preset"] in DEFAULT_PRESETS else len(DEFAULT_PRESETS)
    attn = ATTN_IMPLS.index(case["attn"]) if case["attn"] in ATTN_IMPLS else -1
    experts = EXPERT_IMPLS.index(case["experts"]) if case["experts"] in EXPERT_IMPLS else -1
    return (preset_rank, case["preset"], case["arch"], attn, experts, case["compile"])


def plan_cases(args: argparse.Namespace) -> list[dict]:
    """Eager cases first (they find each case's micro-batch), then compiled ones; gpt2 has no attn/experts variants."""
    cases = []
    for compiled in [c == "on" for c in _csv(args.compile)]:
        for preset in _csv(args.presets):
            for arch in _csv(args.archs):
                variants = (
                    [(a, e) for a in _csv(args.attn) for e in _csv(args.experts)]
                    if arch == "gptoss"
                    else [(None, None)]
                )
                for attn, experts in variants:
                    cases.append(dict(arch=arch, preset=preset, attn=attn, experts=experts, compile=compiled))
    return cases


# ----------------------------------------------------------------------------------------------
# Measurements (CUDA).


RANDOM_VOCAB = 4096  # the random stream uses the first ids only, so a model can learn it within a few steps


class Batches:
    """(x, y) on the device for a step: windows of a prepared split, or a random but learnable token stream.

    The random stream is a Markov chain: each token is the previous one + 1 with probability 1/2, else a fresh draw
    from a Zipf distribution over the first RANDOM_VOCAB ids. Throughput does not depend on the token values; the
    bf16 vs fp32 check needs a loss that falls (uniform tokens would keep it flat at ln V).
    """

    def __init__(self, data: str | None, seq_len: int, vocab_size: int, device: torch.device):
        self.seq_len, self.device = seq_len, device
        self.windows = None
        if data is not None:
            from data_pipeline import TokenWindows

            self.windows = TokenWindows(data, "train", seq_len, rank=0, world_size=1, seed=0)
        self.vocab = min(RANDOM_VOCAB, vocab_size)
        self.zipf = 1.0 / torch.arange(1, self.vocab + 1, dtype=torch.float32, device=device)

    def __call__(self, step: int, batch_size: int):
        if self.windows is not None:
            x, y = self.windows.batch(step, batch_size)
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        g = torch.Generator(device=self.device).manual_seed(step)
        n = self.seq_len + 1
        fresh = torch.multinomial(self.zipf, batch_size * n, replacement=True, generator=g).view(batch_size, n)
        restart = torch.rand(batch_size, n, device=self.device, generator=g) < 0.5
        restart[:, 0] = True
        t = torch.arange(n, device=self.device).expand(batch_size, n)
        last_restart = torch.where(restart, t, torch.zeros_like(t)).cummax(dim=1).values
        rows = (fresh.gather(1, last_restart) + (t - last_restart)) % self.vocab
        return rows[:, :-1], rows[:, 1:]


def model_overrides(case: dict, vocab_size: int | None) -> dict:
    overrides = {} if vocab_size is None else {"vocab_size": vocab_size}
    if case["arch"] == "gptoss":
        overrides.update(attn_impl=case["attn"] or "sdpa", expert_impl=case["experts"] or "loop")
    return overrides


# The measuring code takes the device as an argument so that the CPU tests can drive it on a tiny model.


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)


def train_steps(
    model, optimizer, batches: Batches, batch_size: int, steps: int, first_step: int, autocast
) -> list[float]:
    """The training loop's step, `steps` times: losses (as floats, read once at the end: no per-step sync)."""
    losses = []
    for step in range(first_step, first_step + steps):
        x, y = batches(step, batch_size)
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return [float(v) for v in torch.stack(losses).tolist()]


def measure_case(case: dict, batch_sizes: list[int], args, batches: Batches, device, vocab_size) -> dict:
    """Largest micro-batch that fits, then tokens/s, MFU and peak memory over args.steps timed steps."""
    row = dict(case)
    autocast = bf16_autocast(device)
    peak = peak_flops(device)
    cfg = TrainConfig(arch=case["arch"], preset=case["preset"])
    for batch_size in batch_sizes:
        model = optimizer = runner = None
        failure = None
        try:
            torch.manual_seed(0)
            model = build_model(case["arch"], case["preset"], **model_overrides(case, vocab_size)).to(device)
            fpt = flops_per_token(model, args.seq_len)
            optimizer = build_optimizer(model, cfg, device)
            runner = compile_model(model) if case["compile"] else model
            warmup = 5 if case["compile"] else 2  # compile: forward and backward graphs, recompiles, then steady
            start = time.perf_counter()
            train_steps(runner, optimizer, batches, batch_size, warmup, 0, autocast)
            synchronize(device)
            row["warmup_s"] = time.perf_counter() - start
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            losses = train_steps(runner, optimizer, batches, batch_size, args.steps, warmup, autocast)
            synchronize(device)
            elapsed = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - one failing case must not lose the others' results
            failure = "oom" if is_oom(exc) else f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        if failure is not None:
            # Out of the except block, so the traceback no longer holds the step's activations.
            del model, optimizer, runner
            free_memory()
            if failure == "oom":
                continue
            row.update(micro_batch=batch_size, status=failure)
            return row
        tps = batch_size * args.seq_len * args.steps / elapsed
        row.update(
            micro_batch=batch_size,
            tokens_per_s=tps,
            step_s=elapsed / args.steps,
            tflops=fpt * tps / 1e12,
            mfu=fpt * tps / peak if peak else None,
            peak_mem_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            flops_per_token=fpt,
            final_loss=losses[-1],
            status="ok",
        )
        if not all(math.isfinite(v) for v in losses):
            row["status"] = "non-finite loss"
        row["_model"] = model  # for the MoE share; dropped before the report
        return row
    row.update(micro_batch=None, status=f"OOM even at micro-batch {batch_sizes[-1]}")
    return row


def device_time(fn, iters: int, device: torch.device) -> float:
    """Median seconds of fn() over iters runs (after one warm-up): CUDA events on the current stream on a GPU."""
    fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def moe_dispatch_share(model, batch_size: int, seq_len: int, step_s: float, iters: int = MOE_SHARE_ITERS) -> dict:
    """Share of the eager training step spent in MoE routing/dispatch, forward + backward.

    On the model's first MoE layer, at the step's shape (batch_size x seq_len tokens, bf16 autocast): t_layer is the
    whole layer (router, top-k, counts, aux loss, sort, gather, the loop's host sync, experts, weighting, index_add),
    t_experts its expert part alone (the SwiGLU GEMMs on tokens already sorted, with the same counts; for
    impl="grouped" also its padded layout). share = n_moe_layers * (t_layer - t_experts) / step_s.
    """
    moe_layers = [m for m in model.modules() if isinstance(m, MoEMLP)]
    layer = moe_layers[0]
    device = layer.gate_up.device
    autocast = bf16_autocast(device)
    x = torch.randn(batch_size, seq_len, layer.gate_up.shape[1], device=device, requires_grad=True)
    with torch.no_grad(), autocast:
        flat = x.reshape(-1, x.shape[-1])
        expert_idx = torch.topk(layer.router(flat), layer.experts_per_token, dim=-1).indices.reshape(-1)
        order = torch.argsort(expert_idx, stable=True)
        sorted_expert = expert_idx[order]
        counts = torch.bincount(expert_idx, minlength=layer.num_experts)
        x_sorted = flat[order // layer.experts_per_token].detach()
    host_counts = counts.tolist()
    x_sorted.requires_grad_(True)

    def whole_layer():
        with autocast:
            out, aux, _ = layer(x)
        (out.float().square().mean() + aux).backward()

    def experts_only():
        with autocast:
            if layer.impl == "grouped":
                y = layer.grouped_experts(x_sorted, sorted_expert, counts)
            else:
                pieces, start = [], 0
                for e, n in enumerate(host_counts):
                    if n:
                        h = x_sorted[start : start + n] @ layer.gate_up[e] + layer.gate_up_bias[e]
                        h = swiglu(h, layer.swiglu_alpha, layer.swiglu_limit)
                        pieces.append(h @ layer.down[e] + layer.down_bias[e])
                    start += n
                y = torch.cat(pieces)
        y.float().square().mean().backward()

    t_layer, t_experts = device_time(whole_layer, iters, device), device_time(experts_only, iters, device)
    layer.zero_grad(set_to_none=True)
    share = len(moe_layers) * max(0.0, t_layer - t_experts) / step_s
    return dict(moe_layer_ms=t_layer * 1e3, moe_experts_ms=t_experts * 1e3, moe_dispatch_share=min(1.0, share))


def precision_check(
    arch: str, preset: str, batches: Batches, device, vocab_size, batch_size: int = 16, steps: int = PRECISION_STEPS
) -> dict:
    """Losses of the first PRECISION_STEPS steps in fp32 and under bf16 autocast, same init and batches."""
    curves = {}
    cfg = TrainConfig(arch=arch, preset=preset)
    overrides = {} if vocab_size is None else {"vocab_size": vocab_size}
    for name, autocast in (("fp32", nullcontext()), ("bf16", bf16_autocast(device))):
        torch.manual_seed(0)
        model = build_model(arch, preset, **overrides).to(device)
        optimizer = build_optimizer(model, cfg, device)
        curves[name] = train_steps(model, optimizer, batches, batch_size, steps, 0, autocast)
        del model, optimizer
        free_memory()
    return dict(arch=arch, preset=preset, **compare_precision(curves["fp32"], curves["bf16"]))


def max_rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


CHECK_TOLERANCE = 2e-2  # max |difference| relative to the largest value: a few bf16 roundings (2^-8 each)


def _error(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def check_flex(seq_len: int, window: int | None, device) -> dict:
    """FlexAttention vs the SDPA sink attention on this device, bf16 inputs: output and every gradient."""
    from gptoss.attention import causal_mask, sink_attention
    from gptoss.flex_attention import flex_sink_attention, sliding_block_mask

    name = f"flex vs sdpa attention, window {window}, T {seq_len}, bf16"
    try:
        torch.manual_seed(0)
        B, H, KV, D = 4, 8, 4, 128
        leaves = [
            torch.randn(B, H, seq_len, D, device=device),
            torch.randn(B, KV, seq_len, D, device=device),
            torch.randn(B, KV, seq_len, D, device=device),
            torch.randn(H, device=device),
        ]
        results = {}
        for impl in ("sdpa", "flex"):
            inputs = [t.detach().clone().requires_grad_() for t in leaves]
            q, k, v = (t.bfloat16() for t in inputs[:3])
            if impl == "sdpa":
                pos = torch.arange(seq_len, device=device)
                y = sink_attention(q, k, v, inputs[3], causal_mask(pos, pos, window), D**-0.5)
            else:
                y = flex_sink_attention(q, k, v, inputs[3], sliding_block_mask(seq_len, window, device), D**-0.5)
            y.float().square().sum().backward()
            results[impl] = [y] + [t.grad for t in inputs]
        diffs = [max_rel_diff(got, want) for got, want in zip(results["flex"], results["sdpa"])]
        return dict(
            name=name,
            result="max rel diff out/dq/dk/dv/dsinks " + "/".join(f"{d:.1e}" for d in diffs),
            ok=max(diffs) <= CHECK_TOLERANCE,
            diffs=diffs,
        )
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return dict(name=name, result=_error(exc), ok=False)


def check_grouped(seq_len: int, device, d_model: int, intermediate: int, batch: int = 8) -> list[dict]:
    """Grouped vs loop experts (4 experts, top-1, as the seed) under bf16 autocast: output and gradients; on CUDA
    also that the grouped layer's forward + backward never waits on the host (sync debug mode 'error')."""
    name = f"grouped vs loop experts, d {d_model}, I {intermediate}, {batch}x{seq_len} tokens, bf16"
    checks = []
    try:
        torch.manual_seed(0)
        loop = MoEMLP(d_model, intermediate, 4, 1).to(device)
        with torch.no_grad():
            for p in loop.parameters():
                p.normal_(0, 0.02)
        grouped = MoEMLP(d_model, intermediate, 4, 1, impl="grouped").to(device)
        grouped.load_state_dict(loop.state_dict())
        x = torch.randn(batch, seq_len, d_model, device=device)
        results = []
        for layer in (loop, grouped):
            xi = x.clone().requires_grad_()
            with bf16_autocast(device):
                out, aux, _ = layer(xi)
            (out.float().square().mean() + aux).backward()
            results.append([out, xi.grad, layer.gate_up.grad, layer.down.grad])
        diffs = [max_rel_diff(got, want) for got, want in zip(results[1], results[0])]
        checks.append(
            dict(
                name=name,
                result="max rel diff out/dx/dgate_up/ddown " + "/".join(f"{d:.1e}" for d in diffs),
                ok=max(diffs) <= CHECK_TOLERANCE,
                diffs=diffs,
            )
        )
    except Exception as exc:  # noqa: BLE001
        return [dict(name=name, result=_error(exc), ok=False)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            with bf16_autocast(device):
                out, aux, _ = grouped(x)
            (out.float().square().mean() + aux).backward()
            torch.cuda.set_sync_debug_mode("default")
            result, ok = "forward + backward ran under torch.cuda.set_sync_debug_mode('error')", True
        except Exception as exc:  # noqa: BLE001
            torch.cuda.set_sync_debug_mode("default")
            result, ok = _error(exc), False
        checks.append(dict(name="grouped experts: no host sync", result=result, ok=ok))
    return checks


def cross_checks(args, device) -> list[dict]:
    """The optional paths asked for, against the defaults, on this device."""
    checks = []
    if "flex" in _csv(args.attn):
        checks += [check_flex(args.seq_len, window, device) for window in (128, None)]
    if "grouped" in _csv(args.experts):
        seed = PRESETS["gptoss"]["seed-6l"]
        checks += check_grouped(args.seq_len, device, seed["d_model"], seed["intermediate_size"])
    return checks


# ----------------------------------------------------------------------------------------------


def describe_device(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"


def run(args: argparse.Namespace, device: torch.device, log=print) -> dict:
    """Every measurement for checked args on `device` (CUDA in practice; the tests drive it on the CPU): the report."""
    t0 = time.perf_counter()
    vocab_size = None
    if args.data is not None:
        from data_pipeline import load_manifest

        vocab_size = int(load_manifest(args.data)["vocab_size"])
    data_desc = (
        f"prepared data {os.path.abspath(args.data)} (vocab {vocab_size})"
        if args.data
        else f"random tokens (a learnable Markov chain over ids < {RANDOM_VOCAB}; see Batches)"
    )
    peak = peak_flops(device)
    meta = dict(
        device=describe_device(device),
        peak_tflops=peak / 1e12 if peak else None,
        torch=torch.__version__,
        python=platform.python_version(),
        data=data_desc,
        seq_len=args.seq_len,
        steps=args.steps,
        precision_preset=args.precision_preset,
        precision_steps=args.precision_steps,
    )
    log(f"bench_gpu: {meta['device']}, torch {meta['torch']}, data: {data_desc}")

    def batches_for(arch: str, preset: str) -> Batches:
        return Batches(args.data, args.seq_len, vocab_size or PRESETS[arch][preset]["vocab_size"], device)

    batch_list = sorted({int(b) for b in _csv(args.micro_batches)}, reverse=True)
    rows, eager_batch = [], {}

    def run_case(case: dict) -> None:
        key = (case["arch"], case["preset"], case["attn"], case["experts"])
        label = "/".join(str(case[k]) for k in ("arch", "preset", "attn", "experts")) + (
            " compiled" if case["compile"] else ""
        )
        if time.perf_counter() - t0 > args.budget_s:
            rows.append(dict(case, status=f"skipped (past --budget-s {args.budget_s:.0f})"))
            log(f"  {label}: skipped, past the time budget")
            return
        sizes = [b for b in batch_list if b <= eager_batch.get(key, batch_list[0])]
        row = measure_case(case, sizes, args, batches_for(case["arch"], case["preset"]), device, vocab_size)
        model = row.pop("_model", None)
        if row["status"] == "ok" and not case["compile"]:
            eager_batch[key] = row["micro_batch"]
            if case["arch"] == "gptoss":
                try:
                    row.update(moe_dispatch_share(model, row["micro_batch"], args.seq_len, row["step_s"]))
                except Exception as exc:  # noqa: BLE001 - reported in the row
                    row["moe_dispatch_error"] = _error(exc)
        del model
        if case["compile"]:
            torch._dynamo.reset()
        free_memory()
        rows.append(row)
        log(
            f"  {label}: {row['status']}, micro-batch {row.get('micro_batch')}, "
            f"{format_cell(row.get('tokens_per_s'), '{:,.0f}')} tokens/s, {time.perf_counter() - t0:.0f} s"
        )

    cases = plan_cases(args)
    for case in cases:  # eager first: cheap, and they set each compiled case's starting micro-batch
        if not case["compile"]:
            run_case(case)
    precision = []
    for arch in _csv(args.archs):
        try:
            precision.append(
                precision_check(
                    arch,
                    args.precision_preset,
                    batches_for(arch, args.precision_preset),
                    device,
                    vocab_size,
                    steps=args.precision_steps,
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported in the table
            precision.append(dict(arch=arch, preset=args.precision_preset, error=_error(exc)))
        free_memory()
    log(f"  bf16 vs fp32 done, {time.perf_counter() - t0:.0f} s")
    checks = cross_checks(args, device)
    free_memory()
    for case in cases:  # compiled last: each compile costs tens of seconds, and the budget may cut them
        if case["compile"]:
            run_case(case)
    rows.sort(key=case_sort_key)
    meta["elapsed_s"] = time.perf_counter() - t0
    return build_report(meta, rows, precision, checks)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"bench_gpu: {problem}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device on this machine (torch {torch.__version__}); nothing measured.")
        return 0
    report = run(args, torch.device("cuda", torch.cuda.current_device()), log=lambda line: print(line, flush=True))
    print(format_table(report))
    if args.out:
        write_json(args.out, report)
        print(f"bench_gpu: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
