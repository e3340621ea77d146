"""Tests for gptoss/accounting.py: hand-counted parameters of the debug presets and the FLOPs formula."""
from gptoss import build_model, count_params, flops_per_token


def test_gptoss_debug_param_count_by_hand():
    V, d, L, H, KV, hd, E, k, I = 512, 64, 2, 4, 2, 16, 4, 2, 64
    qkv = d * (H + 2 * KV) * hd + (H + 2 * KV) * hd  # 8320
    out = H * hd * d + d  # 4160
    router = d * E + E  # 260
    expert = d * 2 * I + 2 * I + I * d + d  # 12480 per expert
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
