"""Tests for gptoss/hf_export.py: transformers loads the export and reproduces our logits (fp32, eager attention)."""

import json

import pytest
import torch

from gptoss import build_model, export_hf

transformers = pytest.importorskip("transformers")


def randomise(model):
    """Weights well away from the near-zero init, so sinks, biases, clamps and routing all matter."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "sinks")):
                p.normal_(0, 0.5)
            elif p.ndim == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.15)
    return model.eval()


def hf_logits(out_dir, idx):
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        out_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()
    with torch.no_grad():
        return hf(idx).logits, hf


def test_gptoss_export_matches_transformers(tmp_path):
    # Window 8 with 40 tokens: sliding (layers 0, 2) and full (layer 1) attention both differ; top-2 of 4 experts.
    torch.manual_seed(0)
    model = randomise(build_model("gptoss", n_layers=3, sliding_window=8))
    export_hf(model, tmp_path, eos_token_id=3)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["layer_types"] == ["sliding_attention", "full_attention", "sliding_attention"]
    assert (tmp_path / "generation_config.json").exists()
    idx = torch.randint(0, 512, (2, 40))
    theirs, hf = hf_logits(tmp_path, idx)
    assert type(hf).__name__ == "GptOssForCausalLM"
    with torch.no_grad():
        ours = model(idx)
        assert (ours - theirs).abs().max().item() < 1e-4
        # The check has teeth: dropping the window (or the sinks) moves the logits far more than the tolerance.
        for block in model.blocks:
            block.attn.window = block.window = None
        assert (model(idx) - theirs).abs().max().item() > 1e-2


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_export_matches_transformers(tmp_path, tie):
    torch.manual_seed(0)
    model = randomise(build_model("gpt2", tie_embeddings=tie))
    if tie:
        model.lm_head.weight = model.token_embedding.weight
    export_hf(model, tmp_path)
    idx = torch.randint(0, 512, (2, 50))
    theirs, hf = hf_logits(tmp_path, idx)
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) == tie
    with torch.no_grad():
        assert (model(idx) - theirs).abs().max().item() < 1e-4


def test_gptoss_without_window_and_with_other_kv_heads_still_matches_transformers(tmp_path):
    # n_kv_heads and the window are free in HF's GptOss config: these ladder switches export.
    torch.manual_seed(0)
    model = randomise(build_model("gptoss", sliding_window=None, n_kv_heads=4))
    export_hf(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["layer_types"] == ["full_attention"] * 2
    idx = torch.randint(0, 512, (2, 30))
    theirs, _ = hf_logits(tmp_path, idx)
    with torch.no_grad():
        assert (model(idx) - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", ["gpt2", "+swiglu", "gptoss-no-sinks", "gptoss-no-yarn", "gptoss-no-untied"])
def test_a_mix_hf_cannot_express_is_refused_before_anything_is_written(tmp_path, variant):
    from gptoss.variants import variant_overrides

    model = build_model("gptoss", **variant_overrides(variant))
    with pytest.raises(ValueError, match="no Hugging Face GptOssForCausalLM equivalent; only models with"):
        export_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["gptoss", "gpt2"])
def test_extra_vocab_rows_leave_the_trained_logits_and_are_never_generated(tmp_path, arch):
    from gptoss import add_vocab_rows, generate

    torch.manual_seed(0)
    model = randomise(build_model(arch))
    export_hf(model, tmp_path, eos_token_id=3, extra_vocab_rows=7)
    assert model.config.vocab_size == 512  # the caller's model is not touched
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == list(range(512, 519))
    assert generation["eos_token_id"] == generation["bos_token_id"] == generation["pad_token_id"] == 3
    idx = torch.randint(0, 519, (2, 30))
    idx[:, ::3] = torch.arange(512, 519).repeat(2, 2)[:, :10]  # extra ids in the input too
    theirs, hf = hf_logits(tmp_path, idx)
    assert theirs.shape[-1] == 519 and (theirs[..., 512:] == 0).all()
    grown = add_vocab_rows(randomise(build_model(arch)), 7)
    with torch.no_grad():
        assert (grown(idx) - theirs).abs().max().item() < 1e-4
    # Our generate over the grown model, limited to the trained ids, is HF's greedy generate (suppress_tokens).
    prompt = [5, 512, 17]  # an extra id among them
    ours = generate(grown, prompt, 12, temperature=0, vocab_limit=512)
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert out[0, len(prompt) :].tolist() == ours and max(ours) < 512


def test_exported_gptoss_config_loads_without_a_rope_warning(tmp_path):
    import logging

    model = build_model("gptoss", max_seq_len=256)
    export_hf(model, tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        config = transformers.AutoConfig.from_pretrained(tmp_path)
    finally:
        logger.removeHandler(handler)
    rope = config.rope_parameters
    assert config.max_position_embeddings / rope["original_max_position_embeddings"] == rope["factor"] == 32.0
    assert not [r for r in records if "RoPE" in r.getMessage()], [r.getMessage() for r in records]


@pytest.mark.parametrize("arch", ["gptoss", "gpt2"])
def test_a_mup_model_exports_with_its_multipliers_folded_in(tmp_path, arch):
    # d_model 64 from base 16: readout multiplier 1/4; base head dim 4 vs head_dim 16: attention scale halved.
    torch.manual_seed(0)
    model = randomise(build_model(arch, parametrization="mup", mup_base_width=16, mup_base_head_dim=4))
    export_hf(model, tmp_path)
    idx = torch.randint(0, 512, (2, 30))
    theirs, _ = hf_logits(tmp_path, idx)
    with torch.no_grad():
        ours = model(idx)
        assert (ours - theirs).abs().max().item() < 1e-4
        # Not trivially equal: the same weights read as standard give other logits.
        model.output_mult = 1.0
        assert (model(idx) - theirs).abs().max().item() > 1e-2
