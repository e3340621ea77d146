"""The output layer's training loss: unembedding matmul + cross-entropy fused and chunked, never storing the logits.

Shared by both architectures' `model(x, y)` path. The plain formulation materialises (B*T, V) logits, their softmax
and their gradient (three V-wide tensors per token) and makes several passes over each; on a CPU this memory traffic,
not the matmul FLOPs, dominated the output layer. Here the logits of CHUNK_ROWS tokens at a time are computed, turned
into their gradient in place, and consumed at once by the two backward matmuls, so the loss and both gradients come out
of the forward pass and backward only scales them.

The vocabulary dimension of the matmuls is padded to a multiple of VOCAB_PAD rows (zero rows appended to a copy of the
weight): odd sizes run slower in the BLAS (issue 12 measured the logits matmul 94 -> 77 ms for 10,571 -> 10,624
rows on this CPU). The padded columns are excluded from the softmax and their gradient rows are dropped, so padding
changes nothing a user can see: parameters, checkpoints, counts, sampling and exports keep the real vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ROWS = 256  # tokens per chunk: (256, ~10k) fp32 logits ~10 MB stay in this CPU's L3 next to the weight
VOCAB_PAD = 64


def padded_size(vocab_size: int, multiple: int = VOCAB_PAD) -> int:
    return -(-vocab_size // multiple) * multiple


def _compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The matmul dtype autocast would pick here (the Function turns autocast off inside and casts by hand)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return dtype


def _target_log_probs(logits: torch.Tensor, probs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[t] per row, given probs = softmax(logits), without a log-softmax pass.

    log p_t = (logit_t - logit_max) + log p_max, since p_max = 1 / sum(exp(logits - logit_max)). Taking the log of
    probs[t] itself would lose all digits once p_t underflows fp32 (a loss above about 87 nats, i.e. a diverging run,
    whose loss must still be right); p_max >= 1 / V never does. No data-dependent branch, so it traces whole."""
    # Two amax reductions cost about a tenth of an exp pass (argmax, single-threaded here, about as much as one).
    logit_max = logits.amax(dim=-1, keepdim=True).float()
    return (logits.gather(1, t).float() - logit_max + probs.amax(dim=-1, keepdim=True).log()).squeeze(1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        chunk_rows: int,
        grad_enabled: bool,
    ) -> torch.Tensor:
        N, V = hidden.shape[0], weight.shape[0]
        dtype = _compute_dtype(hidden.device, hidden.dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.to(dtype)
            Vp = padded_size(V)
            w = F.pad(weight.to(dtype), (0, 0, 0, Vp - V)) if Vp != V else weight.to(dtype)
            valid = targets != ignore_index
            safe_targets = torch.where(valid, targets, 0)
            # Mean over the counted tokens, as F.cross_entropy (0 / 0 = nan when every target is ignored).
            row_scale = valid.to(torch.float32) / valid.sum()
            need_h, need_w = (grad_enabled and needed for needed in ctx.needs_input_grad[:2])
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(Vp, weight.shape[1], dtype=torch.float32, device=weight.device) if need_w else None
            loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, N, chunk_rows):
                rows = slice(start, min(start + chunk_rows, N))
                logits = h[rows] @ w.T  # (n, Vp)
                if Vp != V:
                    logits[:, V:] = float("-inf")  # padded columns: probability exactly 0, gradient exactly 0
                t, scale = safe_targets[rows, None], row_scale[rows]
                # One softmax pass (one exp per logit); log_softmax and then exp for the gradient would take two.
                probs = torch.softmax(logits.float(), dim=-1)
                loss -= (_target_log_probs(logits, probs, t) * scale).sum()
                if not (need_h or need_w):
                    continue
                # d(-log p_t)/d logits = softmax - onehot(t), in place in the softmax's storage.
                grad_logits = probs.scatter_add_(1, t, torch.full_like(probs[:, :1], -1.0)).to(dtype)
                # The per-token scale (1 / counted tokens, 0 for ignored) is applied on the narrow d-wide side.
                if need_h:
                    grad_h[rows] = (grad_logits @ w).float().mul_(scale[:, None]).to(hidden.dtype)
                if need_w:
                    h_scaled = (h[rows].float() * scale[:, None]).to(dtype)
                    if dtype == torch.float32:
                        grad_w.addmm_(grad_logits.T, h_scaled)
                    else:
                        grad_w += (grad_logits.T @ h_scaled).float()
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w[:V].to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        # Out of place, so that a retained graph can be run backward again.
        return (
            None if grad_h is None else grad_h * grad_loss.to(grad_h.dtype),
            None if grad_w is None else grad_w * grad_loss.to(grad_w.dtype),
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """Mean cross-entropy of logits = hidden @ weight.T against targets (ignore_index not counted), without storing
    the logits. hidden: (..., d); weight: (V, d); targets: (...,). Equal to
    F.cross_entropy(F.linear(hidden, weight).float().view(-1, V), targets.view(-1), ignore_index=ignore_index)
    up to float rounding, gradients included (computed in the forward pass when grad mode is on)."""
    # Inside forward grad mode is always off, so whether gradients are wanted at all is decided here.
    return _LinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        targets.reshape(-1),
        ignore_index,
        chunk_rows,
        torch.is_grad_enabled(),
    )
