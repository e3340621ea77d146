"""A set of trials as child processes of this one, without Ray: each child is `run_trial(spec, LocalExecutor())`,
`concurrent` at a time, this machine's GPUs dealt round-robin. Plain multiprocessing (spawned children: CUDA cannot
be forked), so that Ctrl-C can end every child through public calls."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import wait
from typing import Optional

from orchestrator.console import say
from orchestrator.executors import Failure, LocalExecutor, run_trial
from orchestrator.spec import RunSpec


def _child(spec: dict, gpu_index: Optional[int], conn) -> None:
    if gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_index)  # before torch touches CUDA in this process
    try:
        summary = run_trial(RunSpec.from_dict(spec), LocalExecutor())
        conn.send(("done", dict(steps=summary["steps"], final_val_loss=summary["final_val_loss"])))
    except KeyboardInterrupt:
        conn.send(("failed", "interrupted"))
    except BaseException as exc:
        conn.send(("failed", " ".join(str(exc).split()) or type(exc).__name__))
    finally:
        conn.close()


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def run_in_processes(specs: list[RunSpec], concurrent: int, experiment: str, show_progress: bool) -> list[Failure]:
    """The specs as child processes; returns the failures as (trial name, one-line reason)."""
    from tqdm.auto import tqdm

    ctx = multiprocessing.get_context("spawn")
    use_gpu = any(not s.train.cpu for s in specs) and _gpus() >= 1
    gpus = max(1, _gpus())
    waiting = list(enumerate(specs))
    running: dict = {}  # sentinel -> (process, receiving end, spec)
    errors: list[Failure] = []
    what = "branches" if experiment.endswith("branches") else "trials"
    bar = tqdm(total=len(specs), desc=f"{what}", unit="trial", disable=not show_progress, leave=False)
    try:
        while waiting or running:
            while waiting and len(running) < concurrent:
                i, spec = waiting.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(spec.to_dict(), i % gpus if use_gpu else None, send))
                proc.start()
                send.close()
                running[proc.sentinel] = (proc, receive, spec)
            for sentinel in wait(list(running)):
                proc, receive, spec = running.pop(sentinel)
                proc.join()
                bar.update(1)
                outcome = receive.recv() if receive.poll() else ("failed", f"exited with code {proc.exitcode}")
                receive.close()
                _show(outcome, spec, bar.n, len(specs), errors, show_progress)
    except KeyboardInterrupt:
        for proc, _, _ in running.values():  # the children get the Ctrl-C too; make sure they stop
            proc.terminate()
        for proc, _, _ in running.values():
            proc.join()
        raise
    finally:
        bar.close()
    return errors


def _show(outcome: tuple, spec: RunSpec, n: int, total: int, errors: list, show_progress: bool) -> None:
    kind, detail = outcome
    if kind == "failed":
        errors.append((spec.name, detail))
        say(f"[failed {n}/{total}] {spec.name}: {detail}")
    elif show_progress:
        say(f"[done {n}/{total}] {spec.name}  step {detail['steps']}  val loss {detail['final_val_loss']:.4f}")
