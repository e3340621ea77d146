"""GPT-OSS mixture-of-experts MLP: top-k router, stacked SwiGLU experts run on sorted token groups, Switch aux loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def swiglu(gate_up: torch.Tensor, alpha: float = 1.702, limit: float = 7.0, interleaved: bool = True) -> torch.Tensor:
    """GPT-OSS's clamped SwiGLU: clamp(glu, max=limit) * sigmoid(alpha * that) * (clamp(linear, +-limit) + 1).
    interleaved: columns even = glu half, odd = linear half (the stored layout); else [glu | linear] halves (see
    deinterleave), which the CPU's vectorised elementwise kernels run about 1.7x faster than stride-2 columns."""
    return _SwiGLU.apply(gate_up, alpha, limit, interleaved)


def _halves(t: torch.Tensor, interleaved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return (t[..., 0::2], t[..., 1::2]) if interleaved else t.chunk(2, dim=-1)


class _SwiGLU(torch.autograd.Function):
    """The clamped SwiGLU with a hand-written backward: about 11 elementwise passes forward and backward instead of
    autograd's 25 over the same (tokens, I) tensors, which made it half of an expert's time at d_model 128.

    g * sigmoid(alpha g) is computed as silu(alpha g) / alpha, so that its derivative is one silu_backward call, and
    each clamp's gradient mask is one hardtanh_backward call. That kernel passes gradient strictly inside its bounds;
    torch.clamp passes it at the bounds too, so the bounds given to it are the next representable values beyond
    +-limit (a limit representable in the dtype, as 7.0 is): the gradient equals autograd's through torch.clamp."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor, alpha: float, limit: float, interleaved: bool) -> torch.Tensor:
        glu, linear = _halves(gate_up, interleaved)
        z = glu.clamp(max=limit).mul_(alpha)
        gated = F.silu(z).div_(alpha)
        linear_1 = linear.clamp(-limit, limit).add_(1)
        ctx.save_for_backward(gate_up, z, gated, linear_1)
        ctx.limit, ctx.interleaved = limit, interleaved
        return gated * linear_1

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        gate_up, z, gated, linear_1 = ctx.saved_tensors
        glu, linear = _halves(gate_up, ctx.interleaved)
        beyond = _next_beyond(ctx.limit, gate_up.dtype)
        # Both halves written straight into one gradient (no concatenation afterwards).
        grad = torch.empty_like(gate_up, memory_format=torch.contiguous_format)
        grad_glu, grad_linear = _halves(grad, ctx.interleaved)
        torch.ops.aten.hardtanh_backward.grad_input(grad_out * gated, linear, -beyond, beyond, grad_input=grad_linear)
        # d/dg [silu(alpha g) / alpha] = silu'(alpha g)
        torch.ops.aten.hardtanh_backward.grad_input(
            torch.ops.aten.silu_backward(grad_out * linear_1, z), glu, -math.inf, beyond, grad_input=grad_glu
        )
        return grad, None, None, None


def _next_beyond(limit: float, dtype: torch.dtype) -> float:
    """The smallest value of `dtype` above the (positive, representable) `limit`, as a Python float."""
    if dtype == torch.float64:
        return math.nextafter(limit, math.inf)
    return limit + 2.0 ** math.floor(math.log2(limit)) * torch.finfo(dtype).eps


def load_balancing_loss(
    router_logits: torch.Tensor, expert_idx: torch.Tensor, num_experts: int, counts: torch.Tensor | None = None
):
    """Switch-style aux loss num_experts * sum_e(fraction_e * mean_prob_e), and the fractions (for logging).

    fraction_e counts top-k assignments (normalised by tokens * k, so uniform routing gives 1/num_experts and the
    loss exactly 1.0); mean_prob_e is the mean softmax over ALL experts of the raw logits, the part that carries
    the gradient. router_logits: (N, E); expert_idx: (N, k) chosen experts; counts: their bincount, if at hand.
    """
    if counts is None:
        counts = torch.bincount(expert_idx.reshape(-1), minlength=num_experts)
    fraction = counts.float() / expert_idx.numel()
    mean_prob = torch.softmax(router_logits.float(), dim=-1).mean(dim=0)
    return num_experts * (fraction * mean_prob).sum(), fraction


def deinterleave(w: torch.Tensor) -> torch.Tensor:
    """(..., 2I) interleaved glu/linear columns -> a copy ordered [glu columns | linear columns]."""
    return w.unflatten(-1, (-1, 2)).transpose(-1, -2).flatten(-2)


class MoEMLP(nn.Module):
    """Router Linear(d, E) with bias; experts stored stacked as (E, ...) Parameters.

    Stacking keeps every expert weight in the autograd graph each step, even an expert that gets no tokens (its
    slice of the gradient is just zero), which DDP requires. Layouts match HF's GptOssExperts:
    gate_up (E, d, 2I) with interleaved glu/linear columns, down (E, I, d), so x @ W[e] needs no transpose.
    """

    def __init__(
        self,
        d_model: int,
        intermediate_size: int,
        num_experts: int,
        experts_per_token: int,
        swiglu_alpha: float = 1.702,
        swiglu_limit: float = 7.0,
        impl: str = "loop",
    ):
        super().__init__()
        self.num_experts, self.experts_per_token = num_experts, experts_per_token
        self.impl = impl  # "loop": a matmul per expert; "grouped": torch._grouped_mm (forward_grouped)
        self.swiglu_alpha, self.swiglu_limit = swiglu_alpha, swiglu_limit
        self.router = nn.Linear(d_model, num_experts, bias=True)
        self.gate_up = nn.Parameter(torch.empty(num_experts, d_model, 2 * intermediate_size))
        self.gate_up_bias = nn.Parameter(torch.zeros(num_experts, 2 * intermediate_size))
        self.down = nn.Parameter(torch.empty(num_experts, intermediate_size, d_model))
        self.down_bias = nn.Parameter(torch.zeros(num_experts, d_model))

    def expert_weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Per expert: (gate_up, gate_up_bias, down, down_bias), gate_up's columns reordered to [glu | linear].

        Views from one unbind per stacked parameter: indexing the stacks per expert instead would make autograd
        allocate and zero-fill a full-size gradient buffer for every index. The reordering is a copy of the
        (small) weights, once per forward, so that every token's activations come out in the fast layout.
        """
        stacks = (deinterleave(self.gate_up), deinterleave(self.gate_up_bias), self.down, self.down_bias)
        return list(zip(*(p.unbind(0) for p in stacks)))

    def expert(self, e: int, x: torch.Tensor, weights: list[tuple[torch.Tensor, ...]] | None = None) -> torch.Tensor:
        gate_up, gate_up_bias, down, down_bias = (weights or self.expert_weights())[e]
        h = swiglu(torch.addmm(gate_up_bias, x, gate_up), self.swiglu_alpha, self.swiglu_limit, interleaved=False)
        return torch.addmm(down_bias, h, down)

    def route(self, x: torch.Tensor, on_device_counts: bool):
        """x (..., d) -> (x as (N, d), the k routing weights per token (N, k), the chosen experts flattened (N*k,),
        tokens per expert (E,), aux loss, load fractions). Top-k over the raw logits, then a softmax over just the k
        selected (the GPT-OSS order). on_device_counts: count with a scatter-add (CUDA's bincount reads its max back
        to the host), for the path that must not sync."""
        x = x.reshape(-1, x.shape[-1])
        logits = self.router(x)
        top_logits, expert_idx = torch.topk(logits, self.experts_per_token, dim=-1, sorted=True)
        weights = torch.softmax(top_logits, dim=-1)
        flat_expert = expert_idx.reshape(-1)
        if on_device_counts:
            counts = torch.zeros(self.num_experts, dtype=torch.long, device=x.device)
            counts.scatter_add_(0, flat_expert, torch.ones_like(flat_expert))
        else:
            counts = torch.bincount(flat_expert, minlength=self.num_experts)
        aux, load = load_balancing_loss(logits, expert_idx, self.num_experts, counts)
        return x, weights, flat_expert, counts, aux, load

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, d) -> (output (B, T, d), aux loss scalar, expert load fractions (E,))."""
        if self.impl == "grouped":
            return self.forward_grouped(x)
        shape = x.shape
        # Compiled, bincount (its output size depends on the data) would split the graph; the scatter-add does not.
        x, weights, flat_expert, counts, aux, load = self.route(x, on_device_counts=torch.compiler.is_compiling())

        if self.num_experts == 1:  # dense special case: no grouping needed
            out = self.expert(0, x) * weights
            return out.reshape(shape), aux, load

        # Group the (token, slot) assignments by expert: one sort, then a contiguous group per expert (one split:
        # a slice per expert would make autograd zero-fill a full-size gradient buffer for each).
        # A loop over experts (not tokens) with plain matmuls: the CPU default (forward_grouped's torch._grouped_mm
        # is for CUDA, and stays opt-in until bench/bench_gpu.py measures it faster there).
        order = torch.argsort(flat_expert, stable=True)
        token_of = order // self.experts_per_token
        x_sorted = x.index_select(0, token_of)  # its backward (index_add_) is about 2x faster than x[token_of]'s
        weights_per_expert = self.expert_weights()
        groups = x_sorted.split(counts.tolist())
        outputs = [self.expert(e, group, weights_per_expert) for e, group in enumerate(groups)]
        y_sorted = torch.cat(outputs) * weights.reshape(-1)[order, None].to(x.dtype)
        out = torch.zeros_like(x).index_add_(0, token_of, y_sorted.to(x.dtype))
        return out.reshape(shape), aux, load

    def forward_grouped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """forward() with the experts as two grouped GEMMs and no host sync, so torch.compile sees one graph.

        The same routing and combine as the loop; per-expert token counts stay on the device (a scatter-add: CUDA's
        bincount reads its max back to the host).
        """
        shape = x.shape
        x, weights, flat_expert, counts, aux, load = self.route(x, on_device_counts=True)

        order = torch.argsort(flat_expert, stable=True)
        token_of = order // self.experts_per_token
        y_sorted = self.grouped_experts(x.index_select(0, token_of), flat_expert[order], counts)
        y_sorted = y_sorted * weights.reshape(-1)[order, None].to(x.dtype)
        out = torch.zeros_like(x).index_add_(0, token_of, y_sorted.to(x.dtype))
        return out.reshape(shape), aux, load

    def grouped_experts(
        self, x_sorted: torch.Tensor, sorted_expert: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """SwiGLU experts on the rows of x_sorted (M, d), sorted by expert (sorted_expert (M,), counts (E,)) -> (M, d).

        The rows go into a zero buffer where every expert's group starts at a multiple of GROUP_ALIGN (the alignment
        grouped GEMM kernels assume); its size is a static bound, so nothing is read back to the host.
        """
        device = x_sorted.device.type
        # torch._grouped_mm is on none of autocast's lists: cast as autocast does for a matmul.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x_sorted.dtype
        rows, ends, total = padded_group_rows(sorted_expert, counts, GROUP_ALIGN)
        padded = x_sorted.new_zeros(total, x_sorted.shape[1], dtype=dtype).index_copy(0, rows, x_sorted.to(dtype))
        expert_of_row = torch.searchsorted(ends, torch.arange(total, device=ends.device), right=True)
        h = torch._grouped_mm(padded, self.gate_up.to(dtype), offs=ends) + self.gate_up_bias[expert_of_row]
        h = swiglu(h, self.swiglu_alpha, self.swiglu_limit)
        y = torch._grouped_mm(h.to(dtype), self.down.to(dtype), offs=ends) + self.down_bias[expert_of_row]
        return y[rows]


GROUP_ALIGN = 8  # rows: 16 bytes of bf16


def padded_group_rows(
    sorted_expert: torch.Tensor, counts: torch.Tensor, align: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows of a buffer where each expert's group of assignments starts at a multiple of align, without host sync.

    sorted_expert: (M,) expert of each assignment, non-decreasing; counts: (E,) assignments per expert.
    Returns (rows (M,), group end offsets (E,) int32, buffer rows). The buffer size is the static bound
    round_up(M, align) + E * align; the last group is extended to its end, so every buffer row belongs to a group
    (zero rows, never left undefined) and every offset is a multiple of align.
    """
    num_experts, m = counts.numel(), sorted_expert.numel()
    total = -(-m // align) * align + num_experts * align
    padded_counts = (counts + align - 1) // align * align
    group_start = torch.cumsum(padded_counts, 0) - padded_counts
    first_sorted = torch.cumsum(counts, 0) - counts  # index in sorted order of each expert's first assignment
    rank = torch.arange(m, device=sorted_expert.device) - first_sorted[sorted_expert]
    rows = group_start[sorted_expert] + rank
    ends = torch.cat([group_start[1:], group_start.new_full((1,), total)]).to(torch.int32)
    return rows, ends, total
