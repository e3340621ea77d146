"""Named model variants between GPT-2 and GPT-OSS: the cumulative component ladder, gptoss's leave-one-outs and
GPT-2's one-factor swaps (gpt2-rope).

A variant is a dict of GptOssConfig overrides applied on top of a gptoss preset (and under any explicit override),
so every variant of a preset shares its width, depth, heads, vocabulary and init scheme. Defined here only.

The ladder starts from GPT-2 (every switch at its GPT-2 setting: the same logits as model_gpt2.GPT2 given the same
weights) and turns one GPT-OSS component on per rung until it is `gptoss` (the preset as it is). The order:
  untied head first (cheap, known to matter: studies/superseded/RESULTS-2026-11-1M.md, appendix D), then
  positions (plain RoPE, then YaRN as its own rung: its concentration multiplies every attention logit by about
  1.81 even at short context), the norm,
  the MLP activation as a DENSE SwiGLU (so the activation is measured apart from sparsity), the attention changes
  (GQA shrinks the k/v projections, sinks, the sliding window on even layers), and the MoE last, so that every
  earlier rung is a dense model with GPT-2's active MLP size (see model_gptoss.mlp_intermediate_size).
Learned-position rungs keep GPT-2's 1,024-row position table (max_seq_len 1024); rope rungs use the preset's.

Rung names start with '+', which trial and run names do not allow; variant_token() maps '+rope' to 'p-rope'.
"""

from __future__ import annotations

import re
from typing import Any

# Every switch at its GPT-2 setting. intermediate_size None: the dense sizing rule of the MLP in use (gelu 4d,
# swiglu 8d/3); n_kv_heads None: as many kv heads as heads.
GPT2_SETTINGS: dict[str, Any] = dict(
    tie_embeddings=True,
    positions="learned",
    max_seq_len=1024,
    norm="layernorm",
    mlp="gelu",
    intermediate_size=None,
    n_kv_heads=None,
    sinks=False,
    sliding_window=None,
)

# (rung, switches that return to the preset's GPT-OSS value, switches set to an intermediate value).
_RUNGS: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("gpt2", (), {}),
    ("+untied", ("tie_embeddings",), {}),
    ("+rope", ("max_seq_len",), {"positions": "rope"}),
    ("+yarn", ("positions",), {}),
    ("+rmsnorm", ("norm",), {}),
    ("+swiglu", (), {"mlp": "swiglu"}),
    ("+gqa", ("n_kv_heads",), {}),
    ("+sinks", ("sinks",), {}),
    ("+window", ("sliding_window",), {}),
    ("+moe", ("mlp", "intermediate_size"), {}),
]

# gptoss with one component put back to its GPT-2 counterpart.
_LEAVE_ONE_OUT: dict[str, dict[str, Any]] = {
    "gptoss-no-untied": dict(tie_embeddings=True),
    "gptoss-no-rope": dict(positions="learned", max_seq_len=1024),  # no rotary embedding at all, YaRN included
    "gptoss-no-yarn": dict(positions="rope"),
    "gptoss-no-rmsnorm": dict(norm="layernorm"),
    "gptoss-no-gqa": dict(n_kv_heads=None),
    "gptoss-no-sinks": dict(sinks=False),
    "gptoss-no-window": dict(sliding_window=None),
    "gptoss-no-moe": dict(mlp="swiglu", intermediate_size=None),  # one dense SwiGLU expert of GPT-2's active size
}


# GPT-2 with one GPT-OSS component swapped in, the mirror of a leave-one-out: with it the effect of that component is
# measured from both ends (added to gpt2, removed from gptoss) at every size.
_ONE_FACTOR: dict[str, dict[str, Any]] = {
    "gpt2-rope": {**{k: v for k, v in GPT2_SETTINGS.items() if k != "max_seq_len"}, "positions": "rope"},
}


def _build() -> dict[str, dict[str, Any]]:
    variants, current = {}, dict(GPT2_SETTINGS)
    for name, restored, changed in _RUNGS:
        for key in restored:
            current.pop(key)
        current.update(changed)
        variants[name] = dict(current)
    assert variants.pop("+moe") == {}, "the last rung must be gptoss itself"
    variants["gptoss"] = {}
    variants.update(_LEAVE_ONE_OUT)
    variants.update(_ONE_FACTOR)
    return variants


VARIANTS: dict[str, dict[str, Any]] = _build()
LADDER: tuple[str, ...] = tuple(name for name, _, _ in _RUNGS[:-1]) + ("gptoss",)  # "+moe" is gptoss
LEAVE_ONE_OUT: tuple[str, ...] = tuple(_LEAVE_ONE_OUT)
ONE_FACTOR: tuple[str, ...] = tuple(_ONE_FACTOR)
# Shorthands accepted where a list of variants is given; "+moe" (the ladder's last step) is another name of gptoss.
GROUPS = {"ladder": LADDER, "leave-one-out": ("gptoss",) + LEAVE_ONE_OUT}
ALIASES = {"+moe": "gptoss"}


def component_pairs() -> list[tuple[str, str, str]]:
    """(component, variant without it, variant with it) for every one-factor change defined here: a GPT-2 swap
    (gpt2 -> gpt2-rope: "rope" added to GPT-2) and a leave-one-out (gptoss-no-rope -> gptoss: "rope" in GPT-OSS).
    A component with both measures its effect from both ends."""
    pairs = [(name.removeprefix("gpt2-"), "gpt2", name) for name in ONE_FACTOR]
    return pairs + [(name.removeprefix("gptoss-no-"), name, "gptoss") for name in LEAVE_ONE_OUT]


def canonical_variant(name: str) -> str:
    """The variant's own name (aliases resolved); ValueError naming the allowed ones if it is unknown."""
    name = ALIASES.get(name, name)
    if name not in VARIANTS:
        raise ValueError(
            f"unknown variant {name!r}; allowed: {', '.join(VARIANTS)} (+moe = gptoss; in a list also "
            f"the groups {', '.join(GROUPS)})"
        )
    return name


def variant_overrides(name: str) -> dict[str, Any]:
    """The GptOssConfig overrides of a named variant (a copy)."""
    return dict(VARIANTS[canonical_variant(name)])


def expand_variants(names: list[str]) -> list[str]:
    """A list of variant names with the group names (ladder, leave-one-out) expanded, duplicates dropped, checked."""
    out: list[str] = []
    for name in names:
        for v in GROUPS.get(name, (name,)):
            v = canonical_variant(v)
            if v not in out:
                out.append(v)
    return out


def variant_token(name: str) -> str:
    """A variant's name as trial/run names allow it ([A-Za-z0-9._-]): '+rope' -> 'p-rope'."""
    token = "p-" + name[1:] if name.startswith("+") else name
    assert re.fullmatch(r"[A-Za-z0-9._-]+", token), token
    return token
