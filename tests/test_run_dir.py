"""The run directory's owner: one writer at a time (an OS lock a kill -9 cannot leave stale), a full disk in one line
with nothing half-written, and an invocation history that shows a killed invocation."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TIKTOKEN_DIR

from orchestrator.run_dir import RunBusy, RunDir, one_writer
from orchestrator.storage import StorageFull, full_disk_is_one_line, open_storage

_HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from orchestrator.run_dir import one_writer
from orchestrator.storage import open_storage
with one_writer(open_storage(sys.argv[2]), "twin"):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_in_one_line_and_a_killed_holder_frees_the_lock_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(REPO), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunBusy) as refused:
            with one_writer(open_storage(str(tmp_path)), "twin"):
                pass
        line = str(refused.value)
        assert f"run 'twin' is being trained by pid {holder.pid} since " in line and "\n" not in line
        assert line.endswith("wait for it or pick another --name")
        with one_writer(open_storage(str(tmp_path)), "other"):  # another run of the same storage is free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with one_writer(open_storage(str(tmp_path)), "twin"):  # the kernel released the dead holder's lock
        pass


def test_a_failed_atomic_write_leaves_no_temporary_file_and_says_what_to_do(tmp_path):
    import dataclasses

    real = open_storage(str(tmp_path))
    target = real.path("run", "metrics.jsonl")
    real_open = real.fs.open_output_stream

    class FullStream:
        def __init__(self, path):
            self.inner = real_open(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

        def write(self, data):
            self.inner.write(data[:3])
            raise OSError(errno.ENOSPC, "No space left on device")

    class FullDisk:  # the local filesystem, whose writes run out of space after 3 bytes
        def __getattr__(self, name):
            return getattr(real.fs, name)

        def open_output_stream(self, path, *args, **kwargs):
            return FullStream(path)

    storage = dataclasses.replace(real, fs=FullDisk())
    with pytest.raises(StorageFull) as full:
        storage.write_text(target, "x" * 100)
    line = str(full.value)
    assert line.startswith(f"cannot write {target}: no space left (") and "MiB free there" in line
    assert "free some space" in line and "\n" not in line
    assert os.listdir(tmp_path / "run") == []  # no metrics.jsonl.tmp-*
    with pytest.raises(StorageFull, match="it is read-only"):
        with full_disk_is_one_line(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(KeyError):  # anything else is not the disk's state: it propagates as it is
        with full_disk_is_one_line(str(tmp_path)):
            raise KeyError("x")


def test_an_invocation_killed_before_it_recorded_its_end_shows_as_killed(tmp_path):
    run = RunDir(open_storage(str(tmp_path)), "r")
    first = run.start_invocation(dict(start_step=0))
    assert run.load_invocations() == [dict(start_step=0, outcome="running")]
    # The process dies here (kill -9): the next invocation finds its entry still running.
    second = run.start_invocation(dict(start_step=10))
    run.end_invocation(second, dict(start_step=10, end_step=20, outcome="finished"))
    assert (first, second) == (0, 1)
    assert [e["outcome"] for e in run.load_invocations()] == ["killed", "finished"]


def test_a_run_needing_more_room_than_the_disk_has_is_refused_before_step_1(tmp_path):
    run = RunDir(open_storage(str(tmp_path)), "r")
    run.check_room(1, "one checkpoint of this run")
    with pytest.raises(StorageFull, match=r"MiB free but one checkpoint of this run needs about .* MiB"):
        run.check_room(2**62, "one checkpoint of this run")


def _train_args(data, storage, name: str, steps: int = 20) -> list[str]:
    return [
        sys.executable,
        str(REPO / "cli.py"),
        "train",
        "--local",
        "--data",
        str(data),
        "--preset",
        "debug",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        str(steps),
        "--eval-every",
        "5",
        "--sample-tokens",
        "0",
        "--threads-per-worker",
        "1",
        "--tokenizer-dir",
        str(TIKTOKEN_DIR),
        "--storage",
        str(storage),
        "--name",
        name,
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_two_trains_on_one_name_one_is_refused_the_other_finishes_cleanly(prepared_data, tmp_path):
    first = subprocess.Popen(
        _train_args(prepared_data, tmp_path, "twin"), env=_env(), stderr=subprocess.PIPE, text=True
    )
    lock = tmp_path / ".twin.lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(_train_args(prepared_data, tmp_path, "twin"), env=_env(), capture_output=True, text=True)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"error: run 'twin' is being trained by pid {first.pid} since " in lines[0]
    run = tmp_path / "twin"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # every step exactly once
    invocations = json.loads((run / "invocations.json").read_text())
    assert [i["outcome"] for i in invocations] == ["finished"]
    assert not (run / "error.log").exists()


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 16 MiB filesystem of its own (root only): room for one debug-model checkpoint, not for two."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)]).returncode:
        pytest.skip(
            "needs root to mount a small tmpfs (the one-line path itself is covered by the fault-injecting test)"
        )
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.slow
def test_a_full_disk_is_one_line_exit_2_leaves_nothing_half_written_and_resumes_once_freed(prepared_data, small_tmpfs):
    args = _train_args(prepared_data, small_tmpfs, "full", steps=15)
    full = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert full.returncode == 2, full.stderr[-2000:]
    lines = [line for line in full.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no space left" in lines[0] and "MiB free there" in lines[0], full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    for folder, _, files in os.walk(small_tmpfs):
        assert ".tmp-" not in folder, folder
        for name in files:
            assert ".tmp-" not in name and os.path.getsize(os.path.join(folder, name)) > 0, (folder, name)
    kept = sorted(p.name for p in (small_tmpfs / "full").iterdir() if p.name.startswith("checkpoint"))
    assert kept == ["checkpoint_0000005"]
    subprocess.run(["mount", "-o", "remount,size=96m", str(small_tmpfs)], check=True)
    again = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming run full from its checkpoint at step 5" in again.stderr + again.stdout
    summary = json.loads((small_tmpfs / "full" / "summary.json").read_text())
    assert summary["steps"] == 15 and summary["final_val_loss"] is not None


def test_a_run_directory_that_is_a_link_to_an_empty_folder_is_moved_aside_and_said(prepared_data, tmp_path):
    from orchestrator.config import TrainConfig
    from orchestrator.trainer import plan_run

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r").symlink_to(empty)
    cfg = TrainConfig(data=str(prepared_data), preset="debug", storage=str(tmp_path / "runs"), name="r")
    plan = plan_run(cfg)
    said: list[str] = []
    RunDir(open_storage(cfg.storage), "r").prepare(plan, said.append)
    assert len(said) == 1 and said[0].startswith(f"starting r: what was at {tmp_path / 'runs' / 'r'} (a link to ")
    assert str(empty) in said[0] and ".old-" in said[0]
    assert (tmp_path / "runs" / "r" / "config.json").is_file() and empty.is_dir()
