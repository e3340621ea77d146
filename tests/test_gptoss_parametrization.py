"""Tests for gptoss/parametrization.py: standard unchanged bit for bit, mup's rules, and the coordinate check."""

import hashlib
import json

import pytest
import torch

from gptoss import build_model, load_checkpoint, save_checkpoint
from gptoss.parametrization import lr_multipliers
from gptoss.variants import GPT2_SETTINGS
from orchestrator.config import TrainConfig
from orchestrator.optimizer import build_optimizer, set_lr

GPT2_SWITCHES = GPT2_SETTINGS  # gptoss with every switch at GPT-2's setting
# sha256 prefixes of (logits, params after 3 AdamW steps), computed with main's code before the switch existed
# (6a826f0, torch on this repo's venv, one CPU thread). A change of torch or BLAS may move them; the equality of
# standard with mup at its base width below does not depend on that.
CASES = {
    "gptoss": ("gptoss", {}, "09fd960359e11e72"),
    "gptoss-gpt2-switches": ("gptoss", GPT2_SWITCHES, "632cfc045754cc25"),
    "gptoss-swiglu-rope": ("gptoss", dict(mlp="swiglu", intermediate_size=None, positions="rope"), "39e7f803c88a87cf"),
    "gpt2": ("gpt2", {}, "91bd77086f0d4643"),
}


def fingerprint(arch: str, overrides: dict) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(arch, "debug", **overrides)
        opt = build_optimizer(model, TrainConfig(arch=arch, preset="debug", lr=3e-3), torch.device("cpu"))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randint(0, 512, (2, 32), generator=g), torch.randint(0, 512, (2, 32), generator=g)
        h = hashlib.sha256()
        with torch.no_grad():
            h.update(model(x).numpy().tobytes())
        for lr in (1e-3, 2e-3, 3e-3):
            set_lr(opt, lr)
            _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(p.detach().numpy().tobytes())
        return h.hexdigest()[:16]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES)
def test_standard_is_bit_identical_to_the_code_before_the_switch(case):
    arch, overrides, expected = CASES[case]
    assert fingerprint(arch, overrides) == expected
    assert fingerprint(arch, dict(overrides, parametrization="standard", mup_base_width=32)) == expected


@pytest.mark.parametrize("arch", ["gptoss", "gpt2"])
def test_mup_at_its_base_width_is_standard_and_elsewhere_is_not(arch):
    # debug presets have d_model 64
    assert fingerprint(arch, dict(parametrization="mup", mup_base_width=64)) == CASES[arch][2]
    assert fingerprint(arch, dict(parametrization="mup", mup_base_width=32)) != CASES[arch][2]


def test_optimizer_groups_per_decay_and_lr_multiplier():
    standard = build_optimizer(build_model("gptoss"), TrainConfig(lr=1e-3), torch.device("cpu"))
    assert [(g["weight_decay"], g["lr_mult"]) for g in standard.param_groups] == [(0.1, 1.0), (0.0, 1.0)]

    model = build_model("gptoss", parametrization="mup", mup_base_width=16)  # width_mult 4
    opt = build_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    assert [(g["weight_decay"], g["lr_mult"]) for g in opt.param_groups] == [(0.1, 1.0), (0.1, 0.25), (0.0, 1.0)]
    names = {id(p): n for n, p in model.named_parameters()}
    hidden = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert (
        "blocks.0.attn.qkv.weight" in hidden
        and "blocks.1.mlp.down" in hidden
        and "blocks.0.mlp.router.weight" in hidden
    )
    assert {names[id(p)] for p in opt.param_groups[0]["params"]} == {"embedding.weight", "unembedding.weight"}
    set_lr(opt, 2e-3)
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 5e-4, 2e-3]
    # an optimizer state saved before lr_mult existed resumes at multiplier 1
    del opt.param_groups[0]["lr_mult"]
    set_lr(opt, 3e-3)
    assert opt.param_groups[0]["lr"] == 3e-3


def test_gpt2_mup_multipliers_and_init():
    torch.manual_seed(0)
    model = build_model("gpt2", d_model=256, n_heads=8, parametrization="mup", mup_base_width=64)
    mults = lr_multipliers(model, model.config)
    assert mults["blocks.0.attn.qkv.weight"] == mults["blocks.1.mlp.proj.weight"] == 0.25
    assert mults["token_embedding.weight"] == mults["position_embedding.weight"] == mults["blocks.0.ln_1.weight"] == 1
    assert "lm_head.weight" not in mults  # tied: the embedding's name and rules
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.01, rel=0.03)  # 0.02 / sqrt(4)
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.03)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(parametrization="mu-p"), "parametrization must be one of standard, mup, got 'mu-p'"),
        (dict(mup_base_width=0), "mup_base_width must be a positive integer, got 0"),
        (dict(mup_base_head_dim=2.5), "mup_base_head_dim must be a positive integer, got 2.5"),
    ],
)
@pytest.mark.parametrize("arch", ["gptoss", "gpt2"])
def test_bad_fields_are_refused_by_name(arch, fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_model(arch, **fields)


def test_train_config_carries_the_switch():
    cfg = TrainConfig(model_overrides=dict(parametrization="mup", mup_base_width=64))
    assert cfg.resolved_model_overrides() == dict(parametrization="mup", mup_base_width=64)


@pytest.mark.parametrize("arch", ["gptoss", "gpt2"])
def test_checkpoints_round_trip_the_fields_and_old_ones_load_as_standard(tmp_path, arch):
    model = build_model(arch, parametrization="mup", mup_base_width=32)
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert (loaded.config.parametrization, loaded.config.mup_base_width, loaded.output_mult) == ("mup", 32, 0.5)
    x = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    config = json.loads((tmp_path / "config.json").read_text())
    for name in ("parametrization", "mup_base_width", "mup_base_head_dim"):
        del config[name]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(tmp_path).config.parametrization == "standard"


# ----------------------------------------------------------------------------------------------
# Coordinate check: train a few Adam steps at one lr on one fixed batch at three widths (head_dim fixed, heads
# added) and compare the size of each activation's coordinates across widths.

WIDTHS = (32, 64, 128)
HEAD_DIM = 16
MUP_BOUND = 1.6  # max / min across the 4x range of widths, any activation, under mup
STANDARD_GROWTH = 3.0  # the largest max / min under standard is at least this


def coordinate_sizes(arch: str, width: int, parametrization: str, steps: int = 4, lr: float = 1e-2) -> list[float]:
    """Mean |coordinate| of the embedding output, each block's output and the logits after `steps` Adam steps."""
    torch.manual_seed(0)
    shape = dict(d_model=width, n_heads=width // HEAD_DIM, intermediate_size=None)
    if arch == "gptoss":
        shape.update(head_dim=HEAD_DIM, n_kv_heads=width // HEAD_DIM // 2)
    model = build_model(arch, "debug", **shape, parametrization=parametrization, mup_base_width=WIDTHS[0])
    opt = build_optimizer(model, TrainConfig(arch=arch, preset="debug", lr=lr, weight_decay=0.0), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 512, (4, 32), generator=g), torch.randint(0, 512, (4, 32), generator=g)
    for _ in range(steps):
        set_lr(opt, lr)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: sizes.append(out[0] if isinstance(out, tuple) else out))
        for m in [model.embedding if arch == "gptoss" else model.token_embedding, *model.blocks]
    ]
    with torch.no_grad():
        sizes.append(model(x))
    for hook in hooks:
        hook.remove()
    return [t.abs().mean().item() for t in sizes]


def spread(arch: str, parametrization: str) -> list[float]:
    """Per activation: max over widths / min over widths of its coordinate size."""
    by_width = [coordinate_sizes(arch, w, parametrization) for w in WIDTHS]
    return [max(col) / min(col) for col in zip(*by_width)]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gptoss", "gpt2"])
def test_coordinate_check_mup_keeps_activations_flat_across_width_and_standard_does_not(arch):
    mup, standard = spread(arch, "mup"), spread(arch, "standard")
    # mup: every activation (embedding, each block, logits) within MUP_BOUND over a 4x range of widths.
    assert max(mup) < MUP_BOUND, mup
    # standard: the blocks' outputs grow with width under the same lr (Adam's updates sum coherently over the width).
    assert max(standard) > STANDARD_GROWTH, standard
    assert standard[0] < MUP_BOUND  # the embedding's coordinates do not sum over the width under either
