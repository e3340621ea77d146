"""Tests for gptoss/accounting.py: hand-counted parameters of the debug presets and the FLOPs formula."""

from gptoss import build_model, count_params, flops_per_token


def test_gptoss_debug_param_count_by_hand():
    V, d, L, H, KV, hd, E, k, inter = 512, 64, 2, 4, 2, 16, 4, 2, 64
    qkv = d * (H + 2 * KV) * hd + (H + 2 * KV) * hd  # 8320
    out = H * hd * d + d  # 4160
    router = d * E + E  # 260
    expert = d * 2 * inter + 2 * inter + inter * d + d  # 12480 per expert
    layer = d + qkv + H + out + d + router + E * expert  # norms, qkv, sinks, out, norm, router, experts = 62792
    embedding = 2 * V * d  # untied embedding + unembedding = 65536
    total = embedding + L * layer + d  # + final norm = 191184
    counts = count_params(build_model("gptoss"))
    assert counts["total"] == total == 191184
    assert counts["embedding"] == embedding
    assert counts["non_embedding"] == total - embedding
    assert counts["active"] == total - L * (E - k) * expert == 141264
    assert counts["bytes_bf16"] == 2 * total and counts["bytes_fp32"] == 4 * total
    # 6 * (active non-embedding + unembedding matmul) + 12 * sum_layers H * hd * context (sliding: min(128, T))
    expected = 6 * (141264 - embedding + d * V) + 12 * (H * hd * 128 + H * hd * 256)
    assert flops_per_token(build_model("gptoss"), 256) == expected


def test_gpt2_debug_param_count_by_hand():
    V, d, L, P = 512, 64, 2, 256
    layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)  # 49984
    embedding = V * d + P * d  # tied lm_head counts once, inside the token embedding
    total = embedding + L * layer + 2 * d
    counts = count_params(build_model("gpt2"))
    assert counts["total"] == counts["active"] == total == 149248
    assert counts["embedding"] == embedding and counts["non_embedding"] == total - embedding
    untied = count_params(build_model("gpt2", tie_embeddings=False))
    assert untied["total"] == total + V * d and untied["embedding"] == embedding + V * d
    assert flops_per_token(build_model("gpt2"), 100) == 6 * (total - embedding + d * V) + 12 * L * d * 100


def test_ladder_mixes_by_hand():
    """Counts for switch mixes of the debug preset (V 512, d 64, 2 layers, 4 heads of 16, max_seq_len 1024)."""
    from gptoss.variants import variant_overrides

    V, d, L, H, hd, T = 512, 64, 2, 4, 16, 256
    ln, rms = 2 * d, d

    def attn(kv, sinks):
        return d * (H + 2 * kv) * hd + (H + 2 * kv) * hd + H * hd * d + d + (H if sinks else 0)

    gelu = d * 4 * d + 4 * d + 4 * d * d + d  # 33088
    inter = 176  # swiglu dense: round(8 * 64 / 3 / 16) * 16
    swiglu = d * 2 * inter + 2 * inter + inter * d + d  # 34176

    # gpt2 rung: tied head, learned 1024-row table, LayerNorm, GELU, 4 kv heads, no sinks or window. Arch gpt2
    # (149,248 with its 256-row table) plus 768 more table rows of 64.
    counts = count_params(build_model("gptoss", **variant_overrides("gpt2")))
    embedding = V * d + 1024 * d
    total = embedding + L * (2 * ln + attn(4, False) + gelu) + ln
    assert (
        (counts["total"], counts["active"], counts["embedding"])
        == (total, total, embedding)
        == (198_400, 198_400, 98_304)
    )
    fpt = flops_per_token(build_model("gptoss", **variant_overrides("gpt2")), T)
    assert fpt == 6 * (total - embedding + d * V) + 12 * L * H * hd * T

    # +swiglu rung: untied, rope (no table), RMSNorm, dense SwiGLU, still MHA.
    counts = count_params(build_model("gptoss", **variant_overrides("+swiglu")))
    embedding = 2 * V * d
    total = embedding + L * (2 * rms + attn(4, False) + swiglu) + rms
    assert (counts["total"], counts["active"], counts["embedding"]) == (total, total, embedding)

    # +window rung: GQA (2 kv heads), sinks, sliding window 128 on layer 0.
    model = build_model("gptoss", **variant_overrides("+window"))
    counts = count_params(model)
    total = embedding + L * (2 * rms + attn(2, True) + swiglu) + rms
    assert counts["total"] == counts["active"] == total
    assert flops_per_token(model, T) == 6 * (total - embedding + d * V) + 12 * (H * hd * 128 + H * hd * T)

    # gptoss-no-untied: a tied head counts once; the unembedding matmul still costs 2 d V per token forward.
    tied = build_model("gptoss", **variant_overrides("gptoss-no-untied"))
    full = count_params(build_model("gptoss"))
    assert count_params(tied)["total"] == full["total"] - V * d
    assert (
        count_params(tied)["embedding"] == V * d
        and count_params(tied)["active_non_embedding"] == full["active_non_embedding"]
    )
    assert flops_per_token(tied, T) == flops_per_token(build_model("gptoss"), T)
