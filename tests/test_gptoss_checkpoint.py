"""Tests for gptoss/checkpoint.py: safetensors + config.json round trip, tied weights, atomic non-clobbering writes."""

import json

import pytest
import torch

from gptoss import build_model, load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    "arch,overrides", [("gptoss", dict(sliding_window=16)), ("gpt2", {}), ("gpt2", dict(tie_embeddings=False))]
)
def test_round_trip_gives_identical_logits(tmp_path, arch, overrides):
    torch.manual_seed(0)
    model = build_model(arch, **overrides)
    (tmp_path / "optimizer.pt").write_bytes(b"keep me")
    save_checkpoint(model, tmp_path, extra={"step": 7})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == arch and config["extra"] == {"step": 7} and config["n_layers"] == 2
    assert (tmp_path / "optimizer.pt").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "optimizer.pt"]
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == model.config
    idx = torch.randint(0, 512, (2, 24))
    torch.testing.assert_close(loaded(idx), model(idx), rtol=0, atol=0)
    if arch == "gpt2":
        assert (loaded.lm_head.weight is loaded.token_embedding.weight) == model.config.tie_embeddings


def test_mismatched_weights_are_rejected(tmp_path):
    save_checkpoint(build_model("gpt2"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path)


def test_written_files_get_the_mode_a_plain_file_gets(tmp_path):
    # safetensors creates its file 0600; an export handed to others must be readable like its other files (0644).
    import stat

    from gptoss import build_model, export_hf, save_checkpoint

    plain = tmp_path / "plain"
    plain.write_text("x")
    expected = stat.S_IMODE(plain.stat().st_mode)
    model = build_model("gpt2", "debug", vocab_size=64)
    save_checkpoint(model, tmp_path / "ckpt")
    export_hf(model, tmp_path / "hf")
    written = list((tmp_path / "ckpt").iterdir()) + list((tmp_path / "hf").iterdir())
    assert {p.name for p in written} >= {"model.safetensors", "config.json", "generation_config.json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: expected for p in written}
