"""A failed run's one line: the failing rank's own last line, or "a worker died" rather than its peers' gloo errors."""

from __future__ import annotations

from ray.train import WorkerGroupError
from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

from orchestrator.failures import describe_failure

# Shaped as Ray 2.60 reports them (seen on this machine): a snippet cut in the middle, the cause at its end.
_SNIPPET = (
    '[Rank 0,1 Error Snippet]:\nTraceback (most recent call last):\n  File "train_loop.py", line 262, in train_worker\n'
    + "    _, loss = model(x, y)\n" * 30
    + "... (Output truncated. See individual worker logs for full details) ...\n"
    + '  File "torch/nn/functional.py", line 2615, in embedding\nIndexError: index out of range in self\n'
)
_DIED = (
    "A worker health check failed.\nWorker info: Worker(\n"
    "  log_file_path='/tmp/ray/session_x/logs/train/worker-1.log',\n)\n"
    "The actor died unexpectedly before finishing this task.\nThe actor is dead because its worker process has died. "
    "Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. "
    "End of file. Some common causes include: (1) the process was killed by the OOM killer"
)
_GLOO = "[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:31911: Connection reset by peer."


def test_the_root_cause_is_the_failing_ranks_last_line_and_the_full_text_is_kept():
    error = WorkerGroupError(
        _SNIPPET, {0: IndexError("index out of range in self"), 1: IndexError("index out of range in self")}
    )
    line, full = describe_failure(error)
    assert line == "rank 0: IndexError: index out of range in self"
    assert "train_loop.py" in full and "--- rank 1: IndexError" in full


def test_a_dead_worker_is_named_as_such_not_by_its_peers_collective_error():
    error = WorkerGroupError(
        "[Rank 0 Error Snippet]:\n...",
        {0: RuntimeError(_GLOO), 1: WorkerHealthCheckFailedError(_DIED, RuntimeError("actor died"))},
    )
    line, full = describe_failure(error)
    assert line.startswith("a worker died (rank 1: Worker unexpectedly exits with a connection error code 2)")
    assert "gloo" not in line
    assert "log of the worker that died: /tmp/ray/session_x/logs/train/worker-1.log" in full


def test_an_error_without_worker_failures_gives_its_own_last_line():
    line, _ = describe_failure(RuntimeError("Traceback ...\n  File x\nValueError: bad storage path"))
    assert line == "ValueError: bad storage path"
    line, _ = describe_failure(KeyError("step"))
    assert line == "KeyError: 'step'"


def test_raylet_messages_stay_off_the_console_without_verbose(ray_session, capsys):
    import ray._private.worker as ray_worker

    ray_worker.print_to_stdstream(
        {"lines": ["A worker died or was killed while executing a task"], "pid": "raylet", "is_err": False},
        ignore_prefix=False,
    )
    ray_worker.print_to_stdstream({"lines": ["a line of our own"], "pid": 1234, "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr()
    assert "A worker died" not in out.out + out.err
    assert "a line of our own" in out.out + out.err
