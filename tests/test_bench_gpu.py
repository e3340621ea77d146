"""Tests for bench/bench_gpu.py on the CPU: its no-GPU exit, no Ray on its import path, the report (table + JSON),
the bf16 tolerance rule, the micro-batch fallback on OOM, and one whole run driven on the CPU with a tiny model."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args, env_extra=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


@pytest.mark.slow
def test_without_cuda_it_exits_0_with_one_line():
    done = run_script()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"bench_gpu: no CUDA device on this machine (torch {torch.__version__}); nothing measured."
    ]


@pytest.mark.slow
def test_bad_arguments_exit_2_with_one_line_even_without_cuda():
    done = run_script("--experts", "loop,fast")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "bench_gpu: --experts takes a comma-separated list from loop, grouped; got 'loop,fast'"
    ]


@pytest.mark.slow
def test_its_import_path_has_no_ray():
    # A GPU box may have no Ray: the script and everything it imports (also lazily) must not pull it in.
    code = (
        "import importlib.util, sys; sys.path.insert(0, '.');"
        f"spec = importlib.util.spec_from_file_location('b', {str(SCRIPT)!r}); "
        "m = importlib.util.module_from_spec(spec);"
        "spec.loader.exec_module(m); import data_pipeline, gptoss.flex_attention, gptoss.attention;"
        "from data_pipeline import TokenWindows, load_manifest;"
        "bad = sorted(k for k in sys.modules if k == 'ray' or k.startswith('ray.')); print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def fake_report(bench):
    rows = [
        dict(
            arch="gpt2",
            preset="seed-6l",
            attn=None,
            experts=None,
            compile=False,
            micro_batch=32,
            tokens_per_s=412345.6,
            mfu=0.4123,
            tflops=407.8,
            peak_mem_gib=61.25,
            warmup_s=3.2,
            status="ok",
        ),
        dict(
            arch="gptoss",
            preset="seed-6l",
            attn="sdpa",
            experts="loop",
            compile=True,
            micro_batch=16,
            tokens_per_s=201000.0,
            mfu=0.2,
            tflops=198.0,
            peak_mem_gib=70.0,
            moe_dispatch_share=0.153,
            warmup_s=61.7,
            status="ok",
        ),
        dict(
            arch="gptoss",
            preset="seed-12l",
            attn="flex",
            experts="grouped",
            compile=False,
            micro_batch=None,
            status="OOM even at micro-batch 1",
        ),
        dict(
            arch="gpt2",
            preset="seed-12l",
            attn=None,
            experts=None,
            compile=True,
            status="skipped (past --budget-s 360)",
        ),
    ]
    precision = [
        bench.compare_precision([10.0, 9.0, 8.0], [10.01, 9.05, 8.1]) | dict(arch="gptoss", preset="cpu-tiny"),
        dict(arch="gpt2", preset="cpu-tiny", error="RuntimeError: boom"),
    ]
    checks = [
        dict(name="grouped experts: no host sync", result="forward + backward ran", ok=True),
        dict(name="flex vs sdpa attention, window 128", result="max rel diff 3.0e-01", ok=False),
    ]
    meta = dict(
        device="NVIDIA H100 80GB HBM3",
        peak_tflops=989.0,
        torch="2.11.0",
        data="random tokens",
        seq_len=512,
        steps=10,
        elapsed_s=431.2,
    )
    return bench.build_report(meta, rows, precision, checks)


def test_table_shows_every_case_and_result(bench):
    report = fake_report(bench)
    lines = bench.format_table(report).splitlines()
    assert lines[0].startswith(
        "device: NVIDIA H100 80GB HBM3 (bf16 peak 989 TFLOP/s), torch 2.11.0, data: random tokens"
    )
    assert lines[1].split() == [
        "arch",
        "preset",
        "attn",
        "experts",
        "compile",
        "micro-batch",
        "tokens/s",
        "MFU",
        "TFLOP/s",
        "peak",
        "GiB",
        "MoE",
        "dispatch",
        "warm-up",
        "s",
        "status",
    ]
    body = [line.split() for line in lines[3:7]]
    assert body[0] == ["gpt2", "seed-6l", "-", "-", "off", "32", "412,346", "41.2%", "407.8", "61.2", "-", "3", "ok"]
    assert body[1] == [
        "gptoss",
        "seed-6l",
        "sdpa",
        "loop",
        "on",
        "16",
        "201,000",
        "20.0%",
        "198.0",
        "70.0",
        "15.3%",
        "62",
        "ok",
    ]
    assert body[2][:6] == ["gptoss", "seed-12l", "flex", "grouped", "off", "-"] and "OOM" in lines[5]
    assert "skipped (past --budget-s 360)" in lines[6]
    assert lines[7] == (
        "bf16 vs fp32, gptoss/cpu-tiny, first 3 steps: max |loss diff| 1.25% of the fp32 loss (step 2), "
        "tolerance 2%: OK"
    )
    assert lines[8] == "bf16 vs fp32, gpt2/cpu-tiny: RuntimeError: boom"
    assert lines[9] == "check grouped experts: no host sync: forward + backward ran OK"
    assert lines[10].endswith("max rel diff 3.0e-01 FAIL")


def test_json_is_the_same_report_written_atomically(bench, tmp_path):
    report = fake_report(bench)
    out = tmp_path / "bench.json"
    bench.write_json(str(out), report)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # no temporary file left behind


def test_compare_precision_tolerance(bench):
    ok = bench.compare_precision([10.0, 5.0], [10.1, 5.05])
    assert ok["ok"] and ok["max_rel_diff"] == pytest.approx(0.01) and ok["tolerance"] == bench.PRECISION_REL_TOL
    bad = bench.compare_precision([10.0, 5.0, 4.0], [10.0, 5.0, 4.2])
    assert not bad["ok"] and bad["worst_step"] == 2 and bad["max_rel_diff"] == pytest.approx(0.05)
    nan = bench.compare_precision([3.0], [math.nan])
    assert not nan["ok"] and nan["max_rel_diff"] == math.inf
    with pytest.raises(ValueError, match="equally long"):
        bench.compare_precision([1.0], [1.0, 2.0])


def test_cases_and_argument_checks(bench):
    args = bench.parse_args(["--attn", "sdpa,flex", "--experts", "loop,grouped", "--presets", "cpu-tiny"])
    assert bench.check_args(args) is None
    cases = bench.plan_cases(args)
    assert [(c["arch"], c["attn"], c["experts"], c["compile"]) for c in cases if not c["compile"]] == [
        ("gpt2", None, None, False),
        ("gptoss", "sdpa", "loop", False),
        ("gptoss", "sdpa", "grouped", False),
        ("gptoss", "flex", "loop", False),
        ("gptoss", "flex", "grouped", False),
    ]
    assert len(cases) == 10
    assert "unknown for gpt2: seed-99" in bench.check_args(bench.parse_args(["--presets", "seed-99"]))
    assert "beyond max_seq_len" in bench.check_args(bench.parse_args(["--seq-len", "2048"]))
    assert "--micro-batches" in bench.check_args(bench.parse_args(["--micro-batches", "8,x"]))
    assert "no valid manifest" in bench.check_args(bench.parse_args(["--data", "/nonexistent"]))


def test_random_batches_are_shifted_deterministic_and_learnable(bench):
    batches = bench.Batches(None, 64, 201088, torch.device("cpu"))
    x, y = batches(3, 4)
    assert x.shape == y.shape == (4, 64) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(batches(3, 4)[0], x) and not torch.equal(batches(4, 4)[0], x)
    assert int(x.max()) < bench.RANDOM_VOCAB
    assert (y == (x + 1) % bench.RANDOM_VOCAB).float().mean() > 0.4  # the +1 transitions a model can learn


def test_largest_micro_batch_that_fits_after_oom(bench, monkeypatch):
    real = bench.train_steps

    def oom_above_2(model, optimizer, batches, batch_size, *rest):
        if batch_size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(model, optimizer, batches, batch_size, *rest)

    monkeypatch.setattr(bench, "train_steps", oom_above_2)
    args = bench.parse_args(["--seq-len", "16", "--steps", "1"])
    case = dict(arch="gpt2", preset="debug", attn=None, experts=None, compile=False)
    device = torch.device("cpu")
    row = bench.measure_case(case, [8, 4, 2, 1], args, bench.Batches(None, 16, 512, device), device, None)
    assert row["status"] == "ok" and row["micro_batch"] == 2 and row["tokens_per_s"] > 0
    row = bench.measure_case(case, [8, 4], args, bench.Batches(None, 16, 512, device), device, None)
    assert row["status"] == "OOM even at micro-batch 4" and row["micro_batch"] is None


@pytest.mark.slow
def test_a_whole_run_on_the_cpu_with_a_tiny_model(bench, tmp_path):
    args = bench.parse_args(
        [
            "--presets",
            "debug",
            "--seq-len",
            "16",
            "--micro-batches",
            "2",
            "--steps",
            "1",
            "--compile",
            "off",
            "--precision-preset",
            "debug",
            "--precision-steps",
            "3",
        ]
    )
    assert bench.check_args(args) is None
    report = bench.run(args, torch.device("cpu"), log=lambda line: None)
    rows = {r["arch"]: r for r in report["rows"]}
    assert all(r["status"] == "ok" and r["micro_batch"] == 2 and r["tokens_per_s"] > 0 for r in rows.values())
    assert 0.0 <= rows["gptoss"]["moe_dispatch_share"] <= 1.0 and rows["gptoss"]["moe_layer_ms"] > 0
    assert [p["arch"] for p in report["precision"]] == ["gpt2", "gptoss"] and all(p["ok"] for p in report["precision"])
    assert report["checks"] == []  # no optional path asked for
    assert "gptoss  debug" in bench.format_table(report)


def test_grouped_cross_check_runs_on_the_cpu(bench):
    [check] = bench.check_grouped(16, torch.device("cpu"), d_model=64, intermediate=64, batch=2)
    assert check["ok"], check
