"""A run's directory, the one owner of its layout: every file name in it, checkpoint naming, writing, pruning and the
choice of the best one, the states a run keeps for budget branches, metrics and invocation records, and the resume
decision. Train, sweep, report and inference all go through it."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from orchestrator.storage import Storage, StorageFull, free_bytes, open_storage

if TYPE_CHECKING:
    from orchestrator.trainer import RunPlan

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
INVOCATIONS_FILE = "invocations.json"  # one entry per `train` of this run: wall time, steps, how it ended
ERROR_FILE = "error.log"
INJECTED_FAILURE_MARKER = ".injected_failure"
DAMAGED_PREFIX = "damaged-"  # a checkpoint that failed verification, set aside
BRANCH_DIR = "branch_points"  # states kept for budget branches, beside the checkpoints and never pruned with them
RAY_TRAIN_DIR = "ray-train"  # Ray Train's own bookkeeping, a fresh folder per invocation (never restored by Ray)

# The files of one checkpoint (gptoss.save_checkpoint writes the first two).
WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.pt"
TRAIN_STATE_FILE = "train_state.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILES = (MODEL_CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, TRAIN_STATE_FILE, MANIFEST_FILE)

_CHECKPOINT_PREFIX = "checkpoint_"
_CHECKPOINT_RE = re.compile(_CHECKPOINT_PREFIX + r"(\d+)$")
# Config fields that must match for a run to continue from its checkpoint.
_RESUME_KEYS = ("arch", "preset", "variant", "model_overrides", "seq_len", "data")


def checkpoint_name(step: int) -> str:
    return f"{_CHECKPOINT_PREFIX}{step:07d}"


def checkpoint_step(path: str) -> int:
    """The step of a checkpoint directory from its name; -1 for anything else."""
    match = _CHECKPOINT_RE.fullmatch(path.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else -1


def branch_state_name(step: int) -> str:
    return f"step_{step:07d}"


def read_state(checkpoint_dir: str) -> dict:
    """A local checkpoint's loop state (step, tokens, val loss, ...); {} when unreadable."""
    try:
        with open(os.path.join(checkpoint_dir, TRAIN_STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class RunBusy(ValueError):
    """Another process is writing this run (or sweep); one line naming it."""


@contextlib.contextmanager
def one_writer(storage: Storage, name: str, kind: str = "run", doing: str = "trained") -> Iterator[None]:
    """Hold the one-writer lock of <storage>/<name> while the block runs, or refuse at once in one line.

    An OS lock (flock) on a file beside the directory (not in it: starting a run over moves its directory aside):
    the kernel releases it when the holder exits, however it exits, so a kill -9 never leaves a stale lock. Remote
    storage (s3://...) has no such lock; one writer there is the user's to ensure."""
    if not storage.is_local:
        yield
        return
    import fcntl

    os.makedirs(storage.root, exist_ok=True)
    path = storage.path(f".{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        since = time.strftime("%H:%M", time.localtime(holder.get("since", time.time())))
        raise RunBusy(
            f"{kind} {name!r} is being {doing} by pid {holder.get('pid', '?')} since {since}; wait for it or pick "
            f"another --name"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dict(pid=os.getpid(), since=time.time())).encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class ResumeDecision:
    resume: bool
    had_checkpoints: bool
    checkpoint: Optional[str] = None  # the checkpoint the workers restore
    valid: list = field(default_factory=list)
    damaged: list = field(default_factory=list)  # (path, why) of checkpoints that failed verification


class RunDir:
    """<storage>/<name>: one run's files, through the storage's filesystem (a local disk or a URI)."""

    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, name
        self.path = storage.path(name)
        self.records: list[dict] = []

    @classmethod
    def at(cls, run_path: str, writable: bool = True) -> "RunDir":
        """The run directory at a path or URI (its parent is the storage root); readers pass writable=False."""
        parent, name = run_path.rstrip("/").rsplit("/", 1)
        return cls(open_storage(parent or "/", writable=writable), name)

    @property
    def uri(self) -> str:
        return self.storage.uri_of(self.name)

    def uri_of(self, path: Optional[str]) -> Optional[str]:
        """The URI of a path inside the run (a checkpoint), as users and Ray see it."""
        return None if path is None else self.storage.uri_of(self.name, path[len(self.path) :].strip("/"))

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def exists(self) -> bool:
        return self.storage.exists(self.path)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def checkpoints(self) -> list[str]:
        """Checkpoint directories, oldest first (temporary and set-aside ones are not checkpoints)."""
        found = [p for p in self.storage.list_dirs(self.path) if checkpoint_step(p) >= 0]
        return sorted(found, key=checkpoint_step)

    def checkpoint_steps(self) -> dict[int, str]:
        return {checkpoint_step(p): p for p in self.checkpoints()}

    def checkpoint_state(self, path: str) -> dict:
        try:
            state = json.loads(self.storage.read_text(f"{path}/{TRAIN_STATE_FILE}"))
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return state if isinstance(state, dict) else {}

    def checkpoint_val_loss(self, path: str) -> float:
        value = self.checkpoint_state(path).get("val_loss")
        return float(value) if isinstance(value, (int, float)) else math.inf

    def best_checkpoint(self) -> Optional[str]:
        """The checkpoint with the lowest validation loss (the newest among equals); None when there is none."""
        paths = self.checkpoints()
        if not paths:
            return None
        return min(reversed(paths), key=self.checkpoint_val_loss)

    def latest_checkpoint(self) -> Optional[str]:
        paths = self.checkpoints()
        return paths[-1] if paths else None

    def write_checkpoint(self, local_dir: str, step: int, keep: int) -> str:
        """Copy a checkpoint written to a local directory into place, atomically, then prune to `keep`: the latest
        and the best by validation loss. Readers see complete checkpoints only."""
        target = self.file(checkpoint_name(step))
        self.storage.put_dir(local_dir, target)
        self.prune(keep)
        return target

    def prune(self, keep: int) -> None:
        paths = self.checkpoints()
        older = sorted(paths[:-1], key=self.checkpoint_val_loss)
        for stale in older[max(0, keep - 1) :]:
            self.storage.delete_dir(stale)

    def check_room(self, need: int, what: str) -> None:
        """Refuse before step 1 what would fail at the first checkpoint: a local disk without room for `need` bytes."""
        if not self.storage.is_local:
            return
        free = free_bytes(self.path)
        if free is not None and free < need:
            raise StorageFull(
                errno.ENOSPC,
                f"{self.storage.root} has {free / 2**20:.1f} MiB free but {what} needs about {need / 2**20:.1f} MiB; "
                f"free some space or pick another --storage",
            )

    # -- states kept for budget branches -------------------------------------------------------------------------

    def branch_state(self, step: int) -> str:
        """Where this run keeps its full training state at `step` for the budget branch that starts there."""
        return self.file(f"{BRANCH_DIR}/{branch_state_name(step)}")

    def write_branch_state(self, local_dir: str, step: int) -> None:
        self.storage.put_dir(local_dir, self.branch_state(step))

    def has_branch_state(self, step: int) -> bool:
        return self.storage.exists(self.branch_state(step))

    def remove_branch_state(self, step: int) -> None:
        """Delete the state kept at `step` (its branch has finished), and the folder once empty."""
        self.storage.delete_dir(self.branch_state(step))
        parent = self.file(BRANCH_DIR)
        if self.storage.is_dir(parent) and not self.storage.list_dirs(parent):
            self.storage.delete_dir(parent)

    # -- records -------------------------------------------------------------------------------------------------

    def read_json(self, name: str) -> Optional[dict]:
        """A JSON file of the run; None when missing or unreadable."""
        path = self.file(name)
        if not self.storage.exists(path):
            return None
        try:
            return json.loads(self.storage.read_text(path))
        except (ValueError, UnicodeDecodeError):
            return None

    def saved_config(self) -> Optional[dict]:
        path = self.file(CONFIG_FILE)
        if not self.storage.exists(path):
            return None
        try:
            return json.loads(self.storage.read_text(path))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{path} is unreadable") from None

    def write_config(self, data: dict) -> None:
        self.storage.write_text(self.file(CONFIG_FILE), json.dumps(data, indent=1))

    def finished_summary(self, total_steps: int) -> Optional[dict]:
        """The summary if the run finished all `total_steps` with an evaluation; None otherwise (a damaged summary
        too: the run trains again, resuming from its checkpoints)."""
        summary = self.read_json(SUMMARY_FILE)
        if not isinstance(summary, dict):
            return None
        done = summary.get("steps") == total_steps and summary.get("final_val_loss") is not None
        return summary if done else None

    def write_summary(self, summary: dict) -> None:
        self.storage.write_text(self.file(SUMMARY_FILE), json.dumps(summary, indent=1))

    def write_error(self, text: str) -> str:
        self.storage.write_text(self.file(ERROR_FILE), text)
        return self.storage.uri_of(self.name, ERROR_FILE)

    def load_invocations(self) -> list[dict]:
        entries = self.read_json(INVOCATIONS_FILE)
        return entries if isinstance(entries, list) else []

    def start_invocation(self, entry: dict) -> int:
        """Record an invocation as it starts (outcome "running"), so a killed one stays in the history: an entry
        still running when the next one starts was killed. Returns its index."""
        entries = [dict(e, outcome="killed") if e.get("outcome") == "running" else e for e in self.load_invocations()]
        entries.append(dict(entry, outcome="running"))
        self._write_invocations(entries)
        return len(entries) - 1

    def end_invocation(self, index: int, entry: dict) -> list[dict]:
        entries = self.load_invocations()
        if 0 <= index < len(entries):
            entries[index] = entry
        else:
            entries.append(entry)
        self._write_invocations(entries)
        return entries

    def _write_invocations(self, entries: list[dict]) -> None:
        self.storage.write_text(self.file(INVOCATIONS_FILE), json.dumps(entries, indent=1))

    def load_records(self) -> list[dict]:
        path = self.file(METRICS_FILE)
        if not self.storage.exists(path):
            return []
        return [json.loads(line) for line in self.storage.read_text(path).splitlines() if line.strip()]

    def restart_at(self, step: int) -> None:
        """A (re)started worker group continues from `step`: records after it belong to a lost attempt."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]

    def add(self, record: dict) -> None:
        self.records.append(record)

    def flush(self) -> None:
        self.storage.write_text(self.file(METRICS_FILE), "".join(json.dumps(r) + "\n" for r in self.records))

    def ray_train_location(self, invocation: int) -> tuple[str, str]:
        """(storage_path, name) for Ray Train's RunConfig: a folder of its own per invocation, so that Ray never
        restores bookkeeping of an earlier invocation (this directory decides what a run resumes from)."""
        return self.storage.uri_of(self.name, RAY_TRAIN_DIR), f"invocation-{invocation}"

    # -- resume ----------------------------------------------------------------------------------------------------

    def decide(self, plan: "RunPlan") -> ResumeDecision:
        """Resume or start fresh, and from which checkpoint: reads only, so that a refusal leaves the run untouched.

        A rerun with the same name resumes from the newest checkpoint that verifies (weights, optimizer, state, data
        manifest all readable); damaged ones are named and set aside. It is refused when the settings or the data
        differ from the run's, with a one-line ValueError that says how to start over.
        """
        from orchestrator.checkpoints import check_same_data, scan_checkpoints

        cfg = plan.cfg
        try:
            saved = self.saved_config()
        except ValueError:
            saved = None  # an unreadable config.json: nothing to compare against, start over (the old run is kept)
        paths = self.checkpoints()
        if not (saved and paths and cfg.resume):
            return ResumeDecision(resume=False, had_checkpoints=bool(paths))
        diffs = [k for k in _RESUME_KEYS if saved.get("config", {}).get(k) != cfg.to_dict().get(k)]
        if diffs:
            raise ValueError(
                f"run {self.name!r} exists with a different {', '.join(diffs)}; pass another --name, "
                f"or --no-resume to start it over (the old run is kept aside)"
            )
        scan = scan_checkpoints(self.storage, paths)
        if scan.latest is None:
            return ResumeDecision(resume=False, had_checkpoints=True, damaged=scan.damaged)
        check_same_data(self.storage, scan.latest, plan.manifest, cfg.data, self.name)
        return ResumeDecision(
            resume=True, had_checkpoints=True, checkpoint=scan.latest, valid=scan.valid, damaged=scan.damaged
        )

    def prepare(self, plan: "RunPlan", say: Callable[[str], None], decision: Optional[ResumeDecision] = None) -> None:
        """Carry out the resume decision (set damaged checkpoints aside, or move the old run aside) and record the
        resolved config. Called only once the whole plan is validated: nothing is written before."""
        decision = decision or self.decide(plan)
        for path, why in decision.damaged:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if decision.resume:
                self.storage.fs.move(path, self.file(DAMAGED_PREFIX + name))
            say(
                f"warning: checkpoint {name} of run {self.name} is unusable ({why})"
                + (f"; set aside as {DAMAGED_PREFIX}{name}" if decision.resume else "")
            )
        if decision.resume:
            say(f"resuming run {self.name} from its checkpoint at step {checkpoint_step(decision.checkpoint)}")
            self.records = self.load_records()
        elif self.storage.exists(self.path):
            link = self.storage.is_local and os.path.islink(self.path)
            target = os.path.realpath(self.path) if link else None
            aside = self.storage.move_aside(self.path)
            if decision.had_checkpoints:
                why = "no checkpoint of it can be restored, " if decision.damaged and plan.cfg.resume else ""
                say(f"{why}starting {self.name} over; the previous run was moved to {aside}")
            else:
                what = f"a link to {target}" if link else "a directory with no checkpoint"
                say(f"starting {self.name}: what was at {self.path} ({what}) was moved to {aside}")
        self.write_config(plan.saved_config())


def local_checkpoint_dir(path: str) -> Optional[str]:
    """A checkpoint directory as given, or the best checkpoint of a run directory given instead; None if neither."""
    if os.path.exists(os.path.join(path, WEIGHTS_FILE)) and os.path.exists(os.path.join(path, MODEL_CONFIG_FILE)):
        return path
    if not os.path.isdir(path):
        return None
    return RunDir.at(os.path.abspath(path), writable=False).best_checkpoint()


def temporary_checkpoint_dir():
    """A local scratch directory a worker writes one checkpoint into before it is put in place."""
    return tempfile.TemporaryDirectory(prefix="ckpt-")
