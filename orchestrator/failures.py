"""Failures in one line: a failed Ray Train run's root cause (the failing rank's own error, or that a worker died) with
the full text for a log file, and a failed sweep trial's reason (our own error behind Ray's and Tune's wrappers).
Ray's own messages are tracebacks cut in the middle, with the cause at their end."""

from __future__ import annotations

import re
from typing import Optional

_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b")
# Ray's names for "the worker process is gone" (its peers then fail with collective errors such as gloo's
# "Connection reset by peer", which are consequences, not the cause).
_DEATH_TYPES = (
    "WorkerHealthCheckFailedError",
    "WorkerHealthCheckTimeoutError",
    "ActorDiedError",
    "RayActorError",
    "ActorUnavailableError",
    "NodeDiedError",
)
_EXIT_DETAIL = re.compile(r"Worker exit detail: ([^.]*)")
_LOG_PATH = re.compile(r"log_file_path='([^']+)'")


def _last_line(error: BaseException) -> str:
    """The error's last meaningful line, in `Type: message` form."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.startswith("...")]
    last = lines[-1] if lines else ""
    if not _EXC_LINE.match(last):
        last = f"{type(error).__name__}: {last}" if last else type(error).__name__
    return last if len(last) <= 400 else last[:397] + "..."


def _is_death(error: BaseException) -> bool:
    return type(error).__name__ in _DEATH_TYPES or "actor died unexpectedly" in str(error)


def describe_failure(error: BaseException) -> tuple[str, str]:
    """(one line for the user, the full text for the run's error log) of an exception from TorchTrainer.fit()."""
    failures: dict = getattr(error, "worker_failures", None) or {}
    full = [str(error)]
    for rank in sorted(failures):
        full.append(f"\n--- rank {rank}: {type(failures[rank]).__name__}\n{failures[rank]}")
    died = sorted(rank for rank, f in failures.items() if _is_death(f))
    if died:
        text = str(failures[died[0]])
        detail = _EXIT_DETAIL.search(text)
        line = (
            f"a worker died (rank {died[0]}"
            + (f": {detail.group(1).strip()}" if detail else "")
            + ")"
            + "; its process was killed or crashed (out of memory, a lost node, a signal)"
        )
        log = _LOG_PATH.search(text)
        if log:
            full.append(f"\nlog of the worker that died: {log.group(1)}")
    elif failures:
        rank = min(failures)
        line = f"rank {rank}: {_last_line(failures[rank])}"
    else:
        cause: Optional[BaseException] = getattr(error, "controller_failure", None)
        line = _last_line(cause or error)
    return line, "\n".join(full) + "\n"


_OUR_ERRORS = (
    "DataError",
    "TokenizerError",
    "UnknownTokenError",
    "TrainingError",
    "ClusterError",
    "ValueError",
    "FileNotFoundError",
    "PermissionError",
)


def failure_reason(error: BaseException) -> str:
    """One line saying why a trial failed: the innermost of our own errors behind Ray's wrappers (RayTaskError,
    TrainingFailedError, ...), without their tracebacks."""
    seen, chain, exc = set(), [], error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__
    for exc in reversed(chain):  # innermost first
        if type(exc).__name__ in _OUR_ERRORS and not type(exc).__module__.startswith("ray"):
            return _squash(str(exc))
    text = " ".join(str(error).split())
    # Ray Train appends each worker's repr (actor, metadata, context) after "Worker info:": no use to the user.
    text = text.split(" Worker info:")[0]
    # A RayTaskError's text embeds the remote traceback; keep the final "SomeError: message" of it.
    matches = re.findall(
        r"\b([A-Z][A-Za-z]*(?:Error|Exception)): (.+?)(?= Traceback \(most recent call last\)|$)", text
    )
    if matches:
        name, message = matches[-1]
        return _squash(f"{name}: {message}")
    return _squash(text) or type(error).__name__


def _squash(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
