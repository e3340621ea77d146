"""N-gram reference baselines: unigram and Kneser-Ney probabilities against a hand computation on a tiny corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data_pipeline.ngram import KneserNeyBigram, KneserNeyTrigram, Unigram, score

# Training stream 0 1 0 2 0 1 over a vocabulary of 4 (id 3 never occurs).
TRAIN = np.array([0, 1, 0, 2, 0, 1])
V = 4


def test_unigram_is_add_one_over_the_vocabulary():
    # counts 3, 2, 1, 0 over 6 tokens: (c + 1) / (6 + 4)
    assert Unigram.fit(TRAIN, V).prob(np.arange(V)) == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_kneser_ney_bigram_matches_the_hand_computation():
    kn = KneserNeyBigram.fit(TRAIN, V, discount=0.75)
    # Bigram types 01 (x2), 10, 02, 20: N1+(..) = 4; distinct predecessors of 0, 1, 2, 3: 2, 1, 1, 0 (3 ids seen).
    # p_cont(w) = max(N1+(.w) - 0.75, 0) / 4 + 0.75 * 3 / 4 / 4
    cont = [1.25 / 4 + 0.140625, 0.25 / 4 + 0.140625, 0.25 / 4 + 0.140625, 0.140625]
    assert kn.continuation == pytest.approx(cont)
    # Context 0: c(0.) = 3, two distinct followers, so the lower order gets 0.75 * 2 / 3 = 0.5.
    after_0 = [0.5 * cont[0], 1.25 / 3 + 0.5 * cont[1], 0.25 / 3 + 0.5 * cont[2], 0.5 * cont[3]]
    assert kn.prob(np.zeros(V, dtype=int), np.arange(V)) == pytest.approx(after_0)
    # Context 1: c(1.) = 1, one follower (0). Context 3 never occurs: the continuation unigram alone.
    assert kn.prob(np.array([1]), np.array([0])) == pytest.approx([0.25 + 0.75 * cont[0]])
    assert kn.prob(np.full(V, 3), np.arange(V)) == pytest.approx(cont)


def test_kneser_ney_trigram_matches_the_hand_computation_and_normalises():
    kn = KneserNeyTrigram.fit(TRAIN, V, discount=0.8)
    # Trigram types 010, 102, 020, 201 (once each). Lowest order: p_cont = max(n - 0.8, 0) / 4 + 0.8 * 3 / 16.
    cont = [1.2 / 4 + 0.15, 0.2 / 4 + 0.15, 0.2 / 4 + 0.15, 0.15]
    # Middle order, context 0: continuation counts N1+(.01) = N1+(.02) = 1, total 2, two followers:
    # p(1 | 0) = (1 - 0.8) / 2 + 0.8 * 2 / 2 * cont[1]. Top: c(20.) = 1, one follower: (1 - 0.8) + 0.8 * p(1 | 0).
    middle = 0.2 / 2 + 0.8 * cont[1]
    assert kn.prob(np.array([2]), np.array([0]), np.array([1])) == pytest.approx([0.2 + 0.8 * middle])
    for u in range(V):
        for v in range(V):
            total = kn.prob(np.full(V, u), np.full(V, v), np.arange(V)).sum()
            assert total == pytest.approx(1.0), (u, v)


def test_score_reports_nats_per_token_and_bits_per_byte():
    val = np.array([0, 1, 0, 3])  # scored: 0 after (0, 1) and 3 after (1, 0)
    byte_lengths = np.array([1, 2, 3, 4])
    result = score(TRAIN, val, V, byte_lengths)
    bigram = [0.25 + 0.75 * (1.25 / 4 + 0.140625), 0.5 * 0.140625]  # p(0 | 1), p(3 | 0)
    nats = -sum(math.log(p) for p in bigram)
    assert result["validation_tokens"] == 2 and result["validation_bytes"] == 1 + 4
    assert result["models"]["kn_bigram"]["nats_per_token"] == pytest.approx(nats / 2)
    assert result["models"]["kn_bigram"]["bits_per_byte"] == pytest.approx(nats / 5 / math.log(2))
    assert result["models"]["unigram"]["nats_per_token"] == pytest.approx(-(math.log(0.4) + math.log(0.1)) / 2)
    with pytest.raises(ValueError, match="at least 3"):
        score(TRAIN[:2], val, V, byte_lengths)


def test_baseline_command_writes_baselines_json(prepared_data):
    from typer.testing import CliRunner

    import cli

    runner = CliRunner()
    out = runner.invoke(cli.app, ["baseline", str(prepared_data), "--train-tokens", "50000"])
    assert out.exit_code == 0, out.output
    assert "kn_trigram" in out.output
    out = runner.invoke(cli.app, ["baseline", str(prepared_data)])
    assert out.exit_code == 0, out.output
    fits = json.loads((prepared_data / "baselines.json").read_text())["fits"]
    assert [f["train_tokens"] for f in fits][0] == 50000 and len(fits) == 2 and fits[1]["all_train_tokens"]
    for fit in fits:
        m = fit["models"]
        # More context helps on stories: each model beats the one below it.
        assert m["kn_trigram"]["nats_per_token"] < m["kn_bigram"]["nats_per_token"] < m["unigram"]["nats_per_token"]
    assert fits[1]["models"]["kn_trigram"]["nats_per_token"] < fits[0]["models"]["kn_trigram"]["nats_per_token"]
    bad = runner.invoke(cli.app, ["baseline", str(prepared_data), "--train-tokens", "10000000000"])
    assert bad.exit_code == 2 and "exceeds the" in bad.output
