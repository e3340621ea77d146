"""FlexAttention path of GPT-OSS attention: a causal / sliding-window block mask, and the sinks applied through the LSE.

Optional (GptOssConfig.attn_impl = "flex"); meant for CUDA, where torch.compile turns flex_attention into a fused
kernel that skips the key blocks the mask rules out. On the CPU it runs eagerly (it materialises the scores) and has
no backward in torch 2.13, so CPU training keeps the SDPA path (attention.sink_attention).
"""

from __future__ import annotations

import functools

import torch

BLOCK_SIZE = 128  # FlexAttention's default tile; a window of 128 then touches at most 2 key blocks per query block


def _flex_module():
    from torch.nn.attention import flex_attention

    return flex_attention


@torch.compiler.disable  # built eagerly once per shape and cached: the compiled model takes it as an input
def sliding_block_mask(seq_len: int, window: int | None, device: torch.device | str):
    """BlockMask for one sequence of seq_len tokens: key k <= query q, and k > q - window if windowed.

    The same rule as attention.causal_mask; blocks wholly outside it are skipped by the kernel.
    """
    return _cached_block_mask(int(seq_len), window, str(torch.device(device)))


@functools.lru_cache(maxsize=32)
def _cached_block_mask(seq_len: int, window: int | None, device: str):
    flex = _flex_module()
    if window is None:

        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx
    else:

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (kv_idx > q_idx - window)

    return flex.create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device, BLOCK_SIZE=BLOCK_SIZE)


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    # Eager flex_attention materialises the full score matrix; compiled, it is a fused kernel (CUDA only: the CPU
    # compiled kernel is inference-only and cannot return the LSE in torch 2.13).
    return torch.compile(_flex_module().flex_attention, dynamic=False)


def flex_sink_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor | None, block_mask, scale: float
) -> torch.Tensor:
    """Same contract as attention.sink_attention, with a BlockMask instead of the bool mask.

    A sink is an extra logit s_h with a zero value. With Z = sum_j exp(score_j) over the allowed keys and
    out = sum_j exp(score_j) v_j / Z (plain attention), the sink's softmax gives
        sum_j exp(score_j) v_j / (Z + exp(s_h)) = out * Z / (Z + exp(s_h)) = out * sigmoid(lse - s_h),  lse = log Z,
    so plain FlexAttention plus its log-sum-exp is exact, and the gradient reaches s_h (and q, k) through the LSE.
    GQA: query head h reads kv head h // (H // KV), as enable_gqa does. sinks None: plain attention.
    """
    if (
        q.device.type == "cpu"
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (q, k, v, sinks))
    ):
        raise ValueError(
            "attn_impl='flex' cannot train on the CPU (FlexAttention has no CPU backward in torch); "
            "use attn_impl='sdpa' there"
        )
    flex = _flex_module()
    # Inside a compiled model dynamo compiles flex_attention itself; eagerly on CUDA, use the compiled kernel.
    fused = q.device.type == "cuda" and not torch.compiler.is_compiling()
    attend = _compiled_flex_attention() if fused else flex.flex_attention
    kwargs = dict(block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    if hasattr(flex, "AuxRequest"):  # torch >= 2.9; older ones only have return_lse
        out, aux = attend(q, k, v, return_aux=flex.AuxRequest(lse=True), **kwargs)
        lse = aux.lse
    else:
        out, lse = attend(q, k, v, return_lse=True, **kwargs)
    if sinks is None:
        return out
    keep = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))  # (B, H, Tq), fp32
    return (out.float() * keep.unsqueeze(-1)).to(out.dtype)
