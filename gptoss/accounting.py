"""Parameter counts (total, active, embedding) and the training-FLOPs-per-token estimate."""

from __future__ import annotations

from torch import nn

from .moe import MoEMLP
from .presets import unwrap_model


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameter counts; tied weights count once.

    - total: every distinct parameter.
    - embedding: token embedding + untied unembedding + a learned position table (gpt2, or gptoss with
      positions="learned"); a tied head counts once, inside the token embedding.
    - non_embedding: total - embedding.
    - active: what one token uses: total minus, in each MoE layer, the (num_experts - experts_per_token) experts it
      skips (router counted in full). active_non_embedding: active - embedding.
    - bytes_bf16 / bytes_fp32: storage of the total at 2 / 4 bytes per parameter.
    """
    model = unwrap_model(model)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.config.vocab_size * model.config.d_model
    if model.config.arch == "gpt2":
        embedding += model.position_embedding.weight.numel()
        if model.lm_head.weight is not model.token_embedding.weight:
            embedding += model.lm_head.weight.numel()
    else:
        if model.config.positions == "learned":
            embedding += model.position_embedding.weight.numel()
        if model.unembedding.weight is not model.embedding.weight:
            embedding += model.unembedding.weight.numel()
    inactive = 0
    for module in model.modules():
        if isinstance(module, MoEMLP):
            expert_params = sum(p.numel() for p in (module.gate_up, module.gate_up_bias, module.down, module.down_bias))
            inactive += expert_params * (module.num_experts - module.experts_per_token) // module.num_experts
    active = total - inactive
    return {
        "total": total,
        "active": active,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "active_non_embedding": active - embedding,
        "bytes_bf16": 2 * total,
        "bytes_fp32": 4 * total,
    }


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token, the nanoGPT / Chinchilla estimate:

        6 * (active_non_embedding + d_model * vocab_size)
        + 12 * sum over layers of n_heads * head_dim * context

    The first term is 2 FLOPs per multiply-add times 3 (forward, and backward's two matmuls) over every weight a token
    multiplies by (MoE: only its k experts; GQA: the smaller k/v projections are already in the count), including
    the unembedding matmul (tied or not) but no embedding lookups or position table. The second is the QK^T and AV
    matmuls, per query head; context = min(sliding_window, seq_len) on sliding layers, seq_len on full ones
    (counting the causally masked half, as nanoGPT does).
    """
    model = unwrap_model(model)
    config = model.config
    counts = count_params(model)
    attention = 0
    for i in range(config.n_layers):
        sliding = config.arch == "gptoss" and config.layer_types[i] == "sliding_attention"
        context = min(config.sliding_window, seq_len) if sliding else seq_len
        attention += config.n_heads * config.head_dim * context
    return float(6 * (counts["active_non_embedding"] + config.d_model * config.vocab_size) + 12 * attention)
