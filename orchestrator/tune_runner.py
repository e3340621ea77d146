"""A set of trials as one Ray Tune experiment: each trial is `run_trial(spec, RayExecutor(in_trial=True))`."""

from __future__ import annotations

from orchestrator.executors import TRIAL_CPU, Failure, Phase, RayExecutor, run_trial
from orchestrator.failures import failure_reason
from orchestrator.spec import RunSpec


def _tune_trial(params: dict) -> None:
    run_trial(RunSpec.from_dict(params["trial"]), RayExecutor(in_trial=True))


def run_with_tune(phase: Phase) -> list[Failure]:
    """One Tune experiment over the phase's specs; returns the failures as (trial name, one-line reason)."""
    from ray import tune

    from orchestrator.tune_console import SweepConsole

    specs, concurrent = phase.specs, phase.concurrent
    total_steps = max(s.total_steps for s in specs)
    scheduler = None
    if phase.asha:
        from ray.tune.schedulers import ASHAScheduler

        eval_every = specs[0].train.eval_every
        evals = max(1, total_steps // eval_every)
        scheduler = ASHAScheduler(
            time_attr="step", max_t=total_steps, grace_period=max(1, evals // 4) * eval_every, reduction_factor=2
        )
    console = SweepConsole(phase.show_progress, len(specs))
    tuner = tune.Tuner(
        tune.with_resources(_tune_trial, {"CPU": TRIAL_CPU}),
        param_space={"trial": tune.grid_search([dict(s.to_dict(), name=s.name) for s in specs])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=min(concurrent, len(specs)),
            scheduler=scheduler,
            metric="val_loss",
            mode="min",
            trial_name_creator=lambda t: t.config["trial"]["name"],
            trial_dirname_creator=lambda t: t.config["trial"]["name"],
        ),
        run_config=tune.RunConfig(
            name=phase.experiment,
            storage_path=phase.sweep_uri,
            verbose=0,
            callbacks=[console],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    return [
        (r.path.rstrip("/").rsplit("/", 1)[-1] if r.path else "?", failure_reason(r.error))
        for r in tuner.fit()
        if r.error is not None
    ]
