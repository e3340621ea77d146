"""Width parametrizations shared by both model configs: "standard" (today's) and "mup" (Tensor Programs V, Adam).

Under mup a model of width d_model behaves, per coordinate, like the model of width mup_base_width it is scaled from,
so a learning rate tuned at the base width stays good at other widths. With width_mult m = d_model / mup_base_width:

- hidden matrices (every weight matrix inside a block: qkv, attention out, MLP / expert in and out, router):
  init std / sqrt(m) and Adam lr / m. Their fan-in grows with width; Adam normalises the gradient, so an update of
  fixed per-entry size would move a d-wide dot product by ~d times as much; 1/m keeps it fixed.
- input-like weights (token and position embeddings) and vector-like parameters (biases, norm gains, sinks): init and
  lr unchanged. Their per-entry contribution does not sum over the width.
- readout: the logits are multiplied by 1/m (output multiplier), the unembedding's init and lr unchanged. A tied
  embedding has the same rules in both roles (unchanged init and lr), so tying needs nothing extra.
- attention logits: scaled by 1/head_dim rather than 1/sqrt(head_dim), measured relative to mup_base_head_dim:
  scale = head_dim**-0.5 * (mup_base_head_dim / head_dim)**0.5. When heads are added as width grows (head_dim fixed,
  this project's width rule, mup_base_head_dim None) the factor is 1 and the scale is the standard one.

Every multiplier is exactly 1.0 at m = 1, so mup at its base width computes what standard computes, bit for bit.
"""

from __future__ import annotations

import math

PARAMETRIZATIONS = ("standard", "mup")


def validate_parametrization(config) -> None:
    """Checks the parametrization fields of a model config (called from its __post_init__)."""
    if config.parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {config.parametrization!r}"
        )
    for name in ("mup_base_width", "mup_base_head_dim"):
        value = getattr(config, name)
        if name == "mup_base_head_dim" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def is_mup(config) -> bool:
    return config.parametrization == "mup"


def width_mult(config) -> float:
    """d_model / mup_base_width under mup; 1.0 under standard."""
    return config.d_model / config.mup_base_width if is_mup(config) else 1.0


def hidden_init_mult(config) -> float:
    """Factor on the init std of hidden matrices: 1 / sqrt(width_mult)."""
    return 1.0 / math.sqrt(width_mult(config))


def hidden_lr_mult(config) -> float:
    """Factor on the Adam lr of hidden matrices: 1 / width_mult."""
    return 1.0 / width_mult(config)


def output_mult(config) -> float:
    """Factor on the logits: 1 / width_mult."""
    return 1.0 / width_mult(config)


def attention_scale(config, head_dim: int) -> float | None:
    """The attention logit scale, or None where it is the standard head_dim**-0.5 (callers then keep their default
    kernels and expressions, which keeps standard bit-identical)."""
    if not is_mup(config) or config.mup_base_head_dim in (None, head_dim):
        return None
    return head_dim**-0.5 * math.sqrt(config.mup_base_head_dim / head_dim)


def is_hidden_matrix(name: str, ndim: int) -> bool:
    """Weight matrices inside the blocks (stacked expert biases, 2-D but biases, excluded)."""
    return name.startswith("blocks.") and ndim >= 2 and not name.endswith("_bias")


def lr_multipliers(model, config) -> dict[str, float]:
    """Per-parameter lr factor, keyed as model.named_parameters() names them (a tied weight once)."""
    hidden = hidden_lr_mult(config)
    return {name: hidden if is_hidden_matrix(name, p.ndim) else 1.0 for name, p in model.named_parameters()}
