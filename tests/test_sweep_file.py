"""orchestrator/sweep_file.py: sweep YAML read strictly (a key given twice is refused, naming both lines)."""

from __future__ import annotations

import pytest

from orchestrator.sweep_file import build_sweep_config, load_sweep_yaml


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("name: t\nseq_len: 64\nseq_len: 32\ngrid:\n  n_layers: [1]\n", "seq_len", (2, 3)),
        ("name: t\ngrid:\n  seed: [0]\n  n_layers: [1]\n  seed: [1]\n", "seed", (3, 5)),
        ("name: t\nlr_by_arch:\n  gpt2: 0.001\n  gpt2: 0.002\n", "gpt2", (3, 4)),
    ],
)
def test_a_key_given_twice_is_refused_at_any_depth_naming_both_lines(tmp_path, text, key, lines):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as refused:
        build_sweep_config(str(path), {}, {}, {})
    line = str(refused.value)
    assert line == f"sweep config {path}: key {key!r} is given twice, on lines {lines[0]} and {lines[1]}; keep one"


def test_distinct_keys_still_load(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("name: t\nseq_len: 64\ngrid:\n  seed: [0, 1]\n  n_layers: [1]\n")
    assert load_sweep_yaml(str(path)) == {"name": "t", "seq_len": 64, "grid": {"seed": [0, 1], "n_layers": [1]}}
