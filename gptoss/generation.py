"""Autoregressive sampling (greedy, temperature, top-k, top-p) with an optional KV cache."""

from __future__ import annotations

import torch
from torch import nn

from .attention import KVCache
from .presets import unwrap_model


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> int:
    """One token id from a (V,) logit vector."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth_value = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_value, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the tokens ranked above it already cover top_p (the top token always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
) -> list[int]:
    """The new token ids (not the prompt); stops after eos_token_id. temperature 0 is greedy.

    With use_cache the prompt is run once and each step feeds one token; sliding layers keep only their window.
    Without it every step recomputes the whole prefix (same tokens, used to check the cache).
    vocab_limit: only ids below it are generated (rows past it were added for the prompt alone: add_vocab_rows).
    """
    model = unwrap_model(model)
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one token")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be a positive int or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    if len(prompt_ids) + max_new_tokens > model.config.max_seq_len:
        raise ValueError(
            f"prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) exceeds "
            f"max_seq_len={model.config.max_seq_len}"
        )
    if vocab_limit is not None and vocab_limit < 1:
        raise ValueError(f"vocab_limit must be >= 1 or None, got {vocab_limit}")
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    was_training = model.training
    model.eval()
    try:
        tokens = list(prompt_ids)
        new_tokens: list[int] = []
        cache = KVCache(model.config.n_layers) if use_cache else None
        step_input = torch.tensor([tokens], device=device)
        for _ in range(max_new_tokens):
            logits = model(step_input, cache=cache)[0, -1]
            if vocab_limit is not None:
                logits = logits[:vocab_limit]
            token = sample_next(logits, temperature, top_k, top_p, generator)
            new_tokens.append(token)
            tokens.append(token)
            if token == eos_token_id:
                break
            step_input = torch.tensor([[token]] if use_cache else [tokens], device=device)
        return new_tokens
    finally:
        model.train(was_training)
