"""What one run is: a RunSpec (the user's TrainConfig, its step count, and what a sweep adds: a branch start, the
states to keep for branches, a group), frozen and validated before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.config import TrainConfig


@dataclass(frozen=True)
class BranchStart:
    """A budget branch starts from the state another run (a sibling in the same storage) kept at `step`."""

    run: str
    step: int

    def __post_init__(self):
        if not isinstance(self.step, int) or self.step < 1:
            raise ValueError(f"branch start step must be a positive step number, got {self.step!r}")


@dataclass(frozen=True)
class RunSpec:
    train: TrainConfig
    total_steps: Optional[int] = None  # None: from the config and the workers the run gets
    branch: Optional[BranchStart] = None
    keep_states_at: tuple[int, ...] = ()  # steps at which the run keeps its whole state for budget branches
    group: Optional[str] = None  # the sweep it belongs to (a wandb group)
    budget: Optional[int] = None  # the token budget of a budget point

    def __post_init__(self):
        if any(not isinstance(s, int) or s < 1 for s in self.keep_states_at):
            raise ValueError(f"keep_states_at must be positive step numbers, got {list(self.keep_states_at)}")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")

    @property
    def name(self) -> str:
        return self.train.run_name

    def steps(self, workers: int) -> int:
        return self.total_steps if self.total_steps is not None else self.train.total_steps(workers)

    def check(self, steps: int) -> None:
        """What only the step count can tell: the schedule (TrainConfig.check_schedule), kept states past the end,
        a branch whose start is not its cooldown start."""
        cfg = self.train
        cfg.check_schedule(steps)
        late = [s for s in self.keep_states_at if s > steps]
        if late:
            raise ValueError(f"branch points {late} lie beyond the run's {steps} steps")
        if self.branch is not None:
            if cfg.schedule != "wsd":
                raise ValueError("a run started from a branch point needs schedule wsd")
            if self.branch.step != cfg.cooldown_start(steps):
                raise ValueError(
                    f"branch start step {self.branch.step} is not the cooldown start {cfg.cooldown_start(steps)} "
                    f"of this {steps}-step run"
                )

    def to_dict(self) -> dict:
        return dict(
            train=self.train.to_dict(),
            total_steps=self.total_steps,
            branch=None if self.branch is None else dict(run=self.branch.run, step=self.branch.step),
            keep_states_at=list(self.keep_states_at),
            group=self.group,
            budget=self.budget,
        )

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        branch = data.get("branch")
        return cls(
            train=TrainConfig.from_dict(data["train"]),
            total_steps=data.get("total_steps"),
            branch=BranchStart(**branch) if branch else None,
            keep_states_at=tuple(data.get("keep_states_at") or ()),
            group=data.get("group"),
            budget=data.get("budget"),
        )

    def replace(self, **changes) -> "RunSpec":
        from dataclasses import replace

        return replace(self, **changes)
