"""Causal self-attention pieces: position-based masks, the KV cache, and GPT-OSS attention (GQA, sinks, sliding window).

For the component ladder the sinks and the rotary embedding are optional (GPT-2's plain attention is this module
with n_kv_heads = n_heads, no sinks, no window and no rope)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .flex_attention import flex_sink_attention
from .rope import YarnRotaryEmbedding


def causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Bool (Tq, Tk), True where query at q_pos may see key at k_pos: k <= q, and k > q - window if windowed.

    Built from absolute positions so the same rule serves training, cached prefill and one-token decoding.
    """
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed = allowed & (k_pos[None, :] > q_pos[:, None] - window)
    return allowed


class KVCache:
    """Per-layer keys/values (B, kv_heads, L, head_dim) with their absolute positions, for generation.

    Layers with a sliding window keep only their last `window` entries, so memory stays bounded past the window.
    """

    def __init__(self, n_layers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.seen = 0  # tokens consumed so far = absolute position of the next token

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, window: int | None):
        """Append this step's k/v; return the keys, values and key positions to attend over."""
        if self.layers[layer] is not None:
            old_k, old_v, old_pos = self.layers[layer]
            k, v, positions = torch.cat([old_k, k], 2), torch.cat([old_v, v], 2), torch.cat([old_pos, positions])
        # Trim after use: this step's queries may still need keys up to `window` back from the earliest of them.
        keep = slice(-window, None) if window is not None else slice(None)
        self.layers[layer] = (k[:, :, keep], v[:, :, keep], positions[keep])
        return k, v, positions


def sink_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor | None, allowed: torch.Tensor, scale: float
) -> torch.Tensor:
    """Softmax attention whose denominator also holds exp(sink_h), one learned logit per query head, with no value.

    q: (B, H, Tq, D); k, v: (B, KV, Tk, D) with query head h reading kv head h // (H // KV); sinks: (H,), or None
    for plain softmax attention; allowed: (Tq, Tk) bool. Returns (B, H, Tq, D).

    Exact via SDPA on an augmented key set: one extra key whose logit is sinks[h] for every query and whose value is 0.
    Because the sink differs per head while keys are shared, the sink goes on the query side: q gets an extra
    coordinate sinks[h] / scale, real keys get 0 there and the sink key gets 1 (so its logit is exactly sinks[h]).
    This keeps SDPA's fused kernels and O(T) memory (an explicit (T, T+1) score matrix is the alternative). The extra
    coordinates are padded to keep the head dim a multiple of 8 for GPU kernels, and v is padded to the same width:
    SDPA's CPU flash kernel needs equal q/k/v head dims and otherwise falls back to the unfused math kernel (measured
    about 1.7x slower forward + backward at B 8, H 8, T 256, D 32). The zero value columns are sliced off.
    """
    B, H, Tq, D = q.shape
    KV = k.shape[1]
    group = H // KV
    if sinks is None:  # same grouped-query view as below, without the sink coordinate
        mask = allowed.repeat(group, 1)
        y = F.scaled_dot_product_attention(q.reshape(B, KV, group * Tq, D), k, v, attn_mask=mask, scale=scale)
        return y.view(B, H, Tq, D)
    pad = 8 - D % 8  # >= 1: room for the sink coordinate
    sink_coord = (sinks.to(q.dtype) / scale).view(1, H, 1, 1).expand(B, H, Tq, 1)
    q = F.pad(torch.cat([q, sink_coord], dim=-1), (0, pad - 1))
    # Grouped-query attention without copying k/v: the H // KV query heads sharing a kv head become extra query rows
    # of that head (head h = kv * group + r, so this is a view), and the mask repeats once per group member.
    q = q.view(B, KV, group * Tq, D + pad)
    sink_key = F.pad(torch.ones(1, dtype=k.dtype, device=k.device), (D, pad - 1))  # e_D
    k = torch.cat([F.pad(k, (0, pad)), sink_key.expand(B, KV, 1, D + pad)], dim=2)
    v = F.pad(v, (0, pad, 0, 1))  # the sink's value is zero; zero columns up to q/k's width
    mask = F.pad(allowed, (0, 1), value=True).repeat(group, 1)  # every query sees the sink
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return y[..., :D].reshape(B, H, Tq, D)


class _CpuFlashSinkAttention(torch.autograd.Function):
    """Causal attention with sinks on the CPU's flash kernel, without the extra sink key or head-dim padding.

    With a sink, y = o * w where o is plain softmax attention and w = sigmoid(lse - sink): the sink only adds
    exp(sink) to each row's denominator. The kernel returns lse (not differentiable through SDPA), so backward is
    written here: the kernel's own backward called with grad w * dy and with y (not o) as its output gives exactly
    the gradients of q, k and v (its per-row correction term rowsum(grad * out) then carries w^2, as it must), and
    the sink's gradient is -sum over rows of w (1 - w) rowsum(dy * o).
    q, k, v: (B, H, T, D) (k, v already repeated per query head); sinks (H,) or None; mask: additive float (Tq, Tk),
    or None with causal=True (the kernel's own rule: query i sees keys 0..i).
    """

    @staticmethod
    def forward(ctx, q, k, v, sinks, mask, causal: bool, scale: float):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=mask, scale=scale
        )
        w = None if sinks is None else torch.sigmoid(lse - sinks.to(lse.dtype).view(1, -1, 1)).unsqueeze(-1)
        y = out if w is None else out * w.to(out.dtype)
        ctx.save_for_backward(q, k, v, out, y, lse, w, mask)
        ctx.causal, ctx.scale = causal, scale
        return y

    @staticmethod
    def backward(ctx, grad_y):
        q, k, v, out, y, lse, w, mask = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_in = grad_y if w is None else grad_y * w.to(grad_y.dtype)
        grad_q, grad_k, grad_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_in, q, k, v, y, lse, 0.0, ctx.causal, attn_mask=mask, scale=ctx.scale
        )
        grad_sinks = None
        if w is not None and ctx.needs_input_grad[3]:
            row = (grad_y.to(w.dtype) * out.to(w.dtype)).sum(-1, keepdim=True)  # w: lse's dtype, fp32 or wider
            grad_sinks = -(w * (1 - w) * row).sum((0, 2, 3))
        return grad_q, grad_k, grad_v, grad_sinks, None, None, None


def cpu_flash_applies(x: torch.Tensor) -> bool:
    """Whether cpu_causal_sink_attention serves this input: the CPU without autocast, in fp32 or fp64."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled("cpu")


QUERY_BLOCK = 128  # rows per flash call on the CPU path; its kernel does not skip masked blocks at these lengths


def cpu_causal_sink_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor | None,
    window: int | None,
    scale: float,
    block: int | None = None,
) -> torch.Tensor:
    """sink_attention for a whole sequence (queries and keys at consecutive positions) on the CPU in fp32/fp64.

    The queries go in blocks of `block` rows, each reading only the keys it may see: the first block is plainly
    causal; block [start, stop) reads keys [start - window + 1 (or 0), stop) under a mask. At T = 256 the kernel
    computes every query-key pair it is given, so two blocks of 128 compute a quarter fewer pairs than one call (half
    of the masked half; with a window, the keys before it are skipped too). Smaller blocks lose more to per-call
    overhead than they save here (measured: 64 rows 1.05x slower per step, one block of 256 1.03x, at cpu-tiny).
    """
    B, H, T, D = q.shape
    block = block or QUERY_BLOCK
    group = H // k.shape[1]
    if group > 1:  # the CPU kernel wants as many k/v heads as query heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    parts = []
    # One split of q, and k/v sliced only where a block reads fewer than all keys: each slice would make autograd
    # zero-fill a full-size gradient buffer.
    for q_block, start in zip(q.split(block, dim=2), range(0, T, block)):
        stop = start + q_block.shape[2]
        lo = 0 if window is None else max(0, start - window + 1)
        if lo == start and (window is None or stop - start <= window):  # the kernel's own causal rule is exact
            mask, causal = None, True
        else:
            q_pos, k_pos = torch.arange(start, stop, device=q.device), torch.arange(lo, stop, device=q.device)
            mask = torch.zeros(len(q_pos), len(k_pos), dtype=q.dtype, device=q.device).masked_fill_(
                ~causal_mask(q_pos, k_pos, window), float("-inf")
            )
            causal = False
        k_block, v_block = (k, v) if (lo, stop) == (0, T) else (k[:, :, lo:stop], v[:, :, lo:stop])
        parts.append(_CpuFlashSinkAttention.apply(q_block, k_block, v_block, sinks, mask, causal, scale))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


class SinkAttention(nn.Module):
    """GPT-OSS attention: fused qkv with bias, grouped-query heads, YaRN RoPE, per-head sinks, optional sliding window.

    rope None: no rotation (positions come from a learned table added to the input); sinks False: no sink logits."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        window: int | None,
        rope: YarnRotaryEmbedding | None,
        sinks: bool = True,
        attn_impl: str = "sdpa",
        scale: float | None = None,  # None: head_dim**-0.5
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.window = n_heads, n_kv_heads, head_dim, window
        self.attn_impl = attn_impl  # "sdpa" or "flex" (then `allowed` is a BlockMask when there is no cache)
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * head_dim, bias=True)
        self.sinks = nn.Parameter(torch.zeros(n_heads)) if sinks else None
        self.out = nn.Linear(n_heads * head_dim, d_model, bias=True)
        self.rope = rope  # shared by all layers; holds only buffers
        self.scale = head_dim**-0.5 if scale is None else scale

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        allowed: torch.Tensor | None,
        cache: KVCache | None = None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        """allowed: the (T, T) bool mask (or flex BlockMask); None = causal over these consecutive positions with
        this layer's window, which lets the CPU take its causal flash path. Ignored with a cache."""
        B, T, _ = x.shape
        H, KV = self.n_heads, self.n_kv_heads
        # Fused projection rows are [q heads | k heads | v heads]; rotate q and k together in one rope call.
        # One split, not two slices: autograd zero-fills a full-size gradient buffer for each slice.
        qk, v = self.qkv(x).view(B, T, H + 2 * KV, self.head_dim).transpose(1, 2).split([H + KV, KV], dim=1)
        if self.rope is not None:
            qk = self.rope(qk, positions)
        q, k = qk.split([H, KV], dim=1)
        if cache is not None:
            k, v, k_pos = cache.update(layer_idx, k, v, positions, self.window)
            allowed = causal_mask(positions, k_pos, self.window)
        if allowed is None and cpu_flash_applies(x):
            y = cpu_causal_sink_attention(q, k, v, self.sinks, self.window, self.scale)
        elif self.attn_impl == "flex" and cache is None:
            y = flex_sink_attention(q, k, v, self.sinks, allowed, self.scale)
        else:
            if allowed is None:
                allowed = causal_mask(positions, positions, self.window)
            y = sink_attention(q, k, v, self.sinks, allowed, self.scale)
        return self.out(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
