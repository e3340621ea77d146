"""Scoring validation windows: summed token losses, tokens, bytes and windows across ranks, and the record of which
tokens a loss is over."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


@torch.no_grad()
def evaluate_windows(model, batches, byte_lengths: torch.Tensor, device, autocast, world_size: int) -> dict:
    """Sum of token losses, tokens, target bytes and windows over the given batches, summed across ranks (a rank may
    have fewer batches than another: the sums meet in one all_reduce after the loop)."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)
        nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        totals[0] += nats.double()
        totals[1] += y.numel()
        totals[2] += byte_lengths[y].sum().double()
        totals[3] += y.size(0)
    if world_size > 1:
        dist.all_reduce(totals)
    model.train()
    nats, tokens, nbytes, windows = totals.tolist()
    loss = nats / max(tokens, 1)
    return dict(
        loss=loss, tokens=int(tokens), bytes=int(nbytes), windows=int(windows), bpb=nats / max(nbytes, 1) / math.log(2)
    )


def eval_scope_fields(tokens: int, windows: int, split_targets: int, whole: bool) -> dict:
    """What an evaluation's loss is over, for metrics records: val_tokens (target tokens scored), val_windows,
    val_fraction (of the split's target tokens) and val_scope ("whole split" or "first N windows")."""
    return dict(
        val_tokens=tokens,
        val_windows=windows,
        val_fraction=tokens / max(1, split_targets),
        val_scope="whole split" if whole else f"first {windows} windows",
    )
