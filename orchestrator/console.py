"""What a run shows its user: a tqdm bar fed by rank 0's events, one-line messages, and optional wandb logging."""

from __future__ import annotations

from typing import Optional


class ConsoleProgress:
    def __init__(self, enabled: bool, run_name: str):
        self.enabled, self.run_name, self.bar = enabled, run_name, None

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        kind = event["kind"]
        if kind == "start":
            if self.bar is None:
                self.bar = tqdm(
                    total=event["total_steps"],
                    initial=event["step"],
                    desc=self.run_name,
                    unit="step",
                    dynamic_ncols=True,
                )
            else:
                self.bar.n = event["step"]
                tqdm.write(f"worker group restarted from step {event['step']}")
                self.bar.refresh()
        elif kind in ("step", "eval") and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(
                loss=f"{event['train_loss']:.3f}", tok_s=f"{event['tokens_per_s']:,.0f}", refresh=False
            )
            if kind == "eval":
                tqdm.write(
                    f"step {event['step']:>6}  val loss {event['val_loss']:.4f}  val bpb {event['val_bpb']:.4f}  "
                    f"train loss {event['train_loss']:.4f}  lr {event['lr']:.2e}"
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


class WandbLogger:
    """Optional Weights & Biases logging from the driver; never required (WANDB_MODE=offline works without an
    account)."""

    def __init__(self, cfg, plan, group: Optional[str] = None):
        try:
            import wandb
        except ImportError:
            raise ValueError("--wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.wandb_project,
            name=cfg.run_name,
            group=group,
            config=dict(cfg.to_dict(), model=plan.model_overrides, params=plan.params),
            reinit=True,
        )

    def log(self, event: dict) -> None:
        self.run.log({k: v for k, v in event.items() if isinstance(v, (int, float))}, step=event["step"])

    def finish(self, summary: dict) -> None:
        if summary.get("sample"):
            self.run.summary["sample"] = summary["sample"]
        for key in ("final_val_loss", "best_val_loss", "tokens_per_s"):
            if summary.get(key) is not None:
                self.run.summary[key] = summary[key]
        self.run.finish()
