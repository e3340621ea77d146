"""The sweep's console under Ray Tune: a Tune callback printing one line per trial and a table of the latest results."""

from __future__ import annotations

import math
import time

from ray import tune

from orchestrator.console import say
from orchestrator.failures import failure_reason


class SweepConsole(tune.Callback):
    """One line per trial as it starts and ends, and a live table of every trial's latest evaluation."""

    def __init__(self, enabled: bool, total: int, table_every_s: float = 30.0):
        self.enabled, self.total, self.table_every_s = enabled, total, table_every_s
        self.rows: dict[str, dict] = {}
        self.last_table = time.time()
        self.done = 0

    def say(self, text: str) -> None:
        if self.enabled:
            say(text)

    def _row(self, trial) -> dict:
        t = trial.config["trial"]["train"]
        mo = t["model_overrides"]
        return self.rows.setdefault(
            trial.trial_id,
            dict(
                trial=trial.config["trial"]["name"],
                arch=t["arch"],
                depth=mo.get("n_layers", "-"),
                experts=mo.get("num_experts", "-"),
                step="-",
                val_loss=math.nan,
            ),
        )

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        self.say(f"[start] {row['trial']}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        row["step"] = result.get("step", row["step"])
        row["val_loss"] = result.get("val_loss", row["val_loss"])
        if time.time() - self.last_table > self.table_every_s:
            self.last_table = time.time()
            self.say(self.table())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        row = self._row(trial)
        self.say(f"[done {self.done}/{self.total}] {row['trial']}  step {row['step']}  val loss {row['val_loss']:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        reason = ""
        try:  # Tune has just pickled the error into the trial's local folder (its storage copy is synced later)
            from ray import cloudpickle

            with open(trial.pickled_error_file, "rb") as f:
                reason = f": {failure_reason(cloudpickle.load(f))}"
        except Exception:
            pass
        self.say(f"[failed {self.done}/{self.total}] {self._row(trial)['trial']}{reason}")

    def table(self) -> str:
        head = f"{'trial':<40} {'arch':<7} {'depth':>5} {'experts':>7} {'step':>6} {'val loss':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows.values():
            loss = f"{r['val_loss']:.4f}" if not math.isnan(r["val_loss"]) else "-"
            lines.append(
                f"{r['trial']:<40} {r['arch']:<7} {r['depth']!s:>5} {r['experts']!s:>7} {r['step']!s:>6} {loss:>9}"
            )
        return "\n".join(lines)
