"""Export to a Hugging Face transformers directory (GptOssForCausalLM / GPT2LMHeadModel) without importing
transformers."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoint import _write_atomically, write_json
from .parametrization import attention_scale, is_mup, output_mult
from .presets import add_vocab_rows, unwrap_model


def _gptoss_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    c = model.config
    q_size, kv_size = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    t = {"model.embed_tokens.weight": model.embedding.weight}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = block.attn_norm.weight
        # Our fused qkv rows are [q heads | k heads | v heads]; HF keeps three projections.
        for name, w in zip(("q", "k", "v"), block.attn.qkv.weight.split([q_size, kv_size, kv_size])):
            t[p + f"self_attn.{name}_proj.weight"] = w
        for name, b in zip(("q", "k", "v"), block.attn.qkv.bias.split([q_size, kv_size, kv_size])):
            t[p + f"self_attn.{name}_proj.bias"] = b
        t[p + "self_attn.o_proj.weight"] = block.attn.out.weight
        t[p + "self_attn.o_proj.bias"] = block.attn.out.bias
        t[p + "self_attn.sinks"] = block.attn.sinks
        t[p + "post_attention_layernorm.weight"] = block.mlp_norm.weight
        t[p + "mlp.router.weight"] = block.mlp.router.weight
        t[p + "mlp.router.bias"] = block.mlp.router.bias
        # Same layouts as ours: gate_up (E, d, 2I) interleaved glu/linear columns, down (E, I, d).
        t[p + "mlp.experts.gate_up_proj"] = block.mlp.gate_up
        t[p + "mlp.experts.gate_up_proj_bias"] = block.mlp.gate_up_bias
        t[p + "mlp.experts.down_proj"] = block.mlp.down
        t[p + "mlp.experts.down_proj_bias"] = block.mlp.down_bias
    t["model.norm.weight"] = model.norm.weight
    t["lm_head.weight"] = model.unembedding.weight
    return t


# Switch settings Hugging Face's GptOssForCausalLM can express (kv heads and the window are free there).
_HF_GPTOSS_SWITCHES = dict(tie_embeddings=False, positions="yarn", norm="rmsnorm", mlp="moe", sinks=True)


def _check_exportable(config) -> None:
    off = [f"{k}={getattr(config, k)!r}" for k, v in _HF_GPTOSS_SWITCHES.items() if getattr(config, k) != v]
    if off:
        wanted = ", ".join(f"{k}={v!r}" for k, v in _HF_GPTOSS_SWITCHES.items())
        raise ValueError(
            f"this gptoss variant ({', '.join(off)}) has no Hugging Face GptOssForCausalLM equivalent; "
            f"only models with {wanted} export"
        )


def _gptoss_config(model: nn.Module) -> dict:
    c = model.config
    rope = {
        "rope_type": "yarn",
        "rope_theta": c.rope_theta,
        "factor": c.rope_scaling_factor,
        "beta_fast": c.rope_ntk_beta,
        "beta_slow": c.rope_ntk_alpha,
        # The reference does not round the ramp bounds; HF rounds them unless truncate is False.
        "truncate": False,
        "original_max_position_embeddings": c.initial_context_length,
    }
    # HF reads max_position_embeddings / original_max_position_embeddings as the YaRN factor and warns when it
    # differs from `factor`; its GptOss uses the field for nothing else (our context limit is in generation_config).
    yarn_context = c.rope_scaling_factor * c.initial_context_length
    max_positions = int(yarn_context) if float(yarn_context).is_integer() else c.max_seq_len
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "num_local_experts": c.num_experts,
        "num_experts_per_tok": c.experts_per_token,
        # HF always builds a sliding mask; with no window every layer is full_attention and this value is unused.
        "sliding_window": c.sliding_window if c.sliding_window is not None else c.max_seq_len,
        "layer_types": list(c.layer_types),
        "max_position_embeddings": max_positions,
        "rms_norm_eps": c.norm_eps,
        "rope_parameters": rope,
        "rope_theta": c.rope_theta,
        "swiglu_limit": c.swiglu_limit,
        "swiglu_alpha": c.swiglu_alpha,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "router_aux_loss_coef": c.aux_loss_coef,
        "output_router_logits": False,
        "initializer_range": c.init_std,
        "hidden_act": "silu",
        "use_cache": True,
        "dtype": "float32",
    }


def _gpt2_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # HF GPT-2 uses Conv1D, whose weight is (in, out): the transpose of our nn.Linear weights.
    t = {
        "transformer.wte.weight": model.token_embedding.weight,
        "transformer.wpe.weight": model.position_embedding.weight,
    }
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        for ours, theirs in ((block.ln_1, "ln_1"), (block.ln_2, "ln_2")):
            t[p + theirs + ".weight"], t[p + theirs + ".bias"] = ours.weight, ours.bias
        for ours, theirs in (
            (block.attn.qkv, "attn.c_attn"),
            (block.attn.out, "attn.c_proj"),
            (block.mlp.fc, "mlp.c_fc"),
            (block.mlp.proj, "mlp.c_proj"),
        ):
            t[p + theirs + ".weight"], t[p + theirs + ".bias"] = ours.weight.t(), ours.bias
    t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = model.ln_f.weight, model.ln_f.bias
    if not model.config.tie_embeddings:
        t["lm_head.weight"] = model.lm_head.weight
    return t


def _gpt2_config(model: nn.Module) -> dict:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.max_seq_len,
        "n_ctx": c.max_seq_len,
        "n_embd": c.d_model,
        "n_layer": c.n_layers,
        "n_head": c.n_heads,
        "n_inner": c.intermediate_size,
        "activation_function": "gelu_new",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": c.norm_eps,
        "initializer_range": c.init_std,
        "scale_attn_weights": True,
        "tie_word_embeddings": c.tie_embeddings,
        "use_cache": True,
        "dtype": "float32",
    }


def _fold_mup(model: nn.Module, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A mup model's multipliers folded into the exported weights, so that HF's standard code computes our logits:
    the readout multiplier into the final norm (its output feeds only the unembedding; a tied embedding stays tied),
    a non-standard attention scale into the query projections (RoPE is linear, so scaling q before it is exact)."""
    c = model.config
    t = dict(t)
    final = ("model.norm.",) if c.arch == "gptoss" else ("transformer.ln_f.",)
    for key in [k for k in t if k.startswith(final)]:
        t[key] = t[key] * output_mult(c)
    scale = attention_scale(c, c.head_dim)
    if scale is not None:
        q_factor = scale / c.head_dim**-0.5
        for key in list(t):
            if ".self_attn.q_proj." in key:
                t[key] = t[key] * q_factor
            elif key.endswith("attn.c_attn.weight"):  # Conv1D (in, 3d): the first d columns are q
                t[key] = torch.cat([t[key][:, : c.d_model] * q_factor, t[key][:, c.d_model :]], dim=1)
            elif key.endswith("attn.c_attn.bias"):
                t[key] = torch.cat([t[key][: c.d_model] * q_factor, t[key][c.d_model :]])
    return t


def export_hf(
    model: nn.Module, out_dir: str | os.PathLike, eos_token_id: int | None = None, extra_vocab_rows: int = 0
) -> None:
    """Write config.json, model.safetensors (fp32, HF parameter names) and generation_config.json to out_dir.

    extra_vocab_rows: ids past the model's vocabulary that a tokenizer may emit; they get zero embedding and output
    rows (add_vocab_rows), so every id is valid, and generation_config's suppress_tokens keeps generate from emitting
    them. eos_token_id also serves as bos (an empty prompt starts from it) and pad. A mup model exports with its
    multipliers folded into the weights (HF configs have no place for them).
    """
    model = unwrap_model(model)
    if model.config.arch == "gptoss":
        _check_exportable(model.config)  # before anything is written
    trained_vocab = model.config.vocab_size
    if extra_vocab_rows:
        model = add_vocab_rows(copy.deepcopy(model), extra_vocab_rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model.config.arch == "gptoss":
        tensors, config = _gptoss_tensors(model), _gptoss_config(model)
    else:
        tensors, config = _gpt2_tensors(model), _gpt2_config(model)
    if is_mup(model.config):
        tensors = _fold_mup(model, tensors)
    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}
    # A default length for clients that give none, as `generate --max-tokens`; max_new_tokens rather than
    # max_length, so a client's own max_new_tokens replaces it without a warning about both being set.
    generation = {"max_new_tokens": min(200, model.config.max_seq_len // 2)}
    if eos_token_id is not None:
        for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
            config[key] = generation[key] = eos_token_id
    if extra_vocab_rows:
        generation["suppress_tokens"] = list(range(trained_vocab, trained_vocab + extra_vocab_rows))
    _write_atomically(
        out_dir / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"})
    )
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "generation_config.json", generation)
