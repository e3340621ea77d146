"""The report's plots of every trial: val loss curves, final val loss against parameters and against compute (PNG
bytes). Pure functions of result rows."""

from __future__ import annotations

import io
from typing import Optional

from orchestrator.formatting import draw_references


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def plot_curves(rows: list[dict], curves: dict, references: Optional[list] = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"gptoss": "tab:orange", "gpt2": "tab:blue"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for r in rows:
        pts = curves.get(r["trial"], [])
        if not pts:
            continue
        label = r["arch"] if r["arch"] not in labelled else None
        labelled.add(r["arch"])
        ax.plot(
            [p["tokens"] for p in pts],
            [p["val_loss"] for p in pts],
            color=colors.get(r["arch"], "gray"),
            alpha=0.75,
            marker=".",
            label=label,
        )
    draw_references(ax, references or [])
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Validation loss during training, every trial")
    ax.grid(alpha=0.3)
    ax.legend(title="architecture")
    fig.tight_layout()
    data = _fig_bytes(fig)
    plt.close(fig)
    return data


def _scatter_panels(rows: list[dict], panels: list[tuple[str, float, str]], references: Optional[list] = None) -> bytes:
    """Final val loss against one quantity per panel: (row key, divisor, axis label); one point per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"gptoss": "tab:orange", "gpt2": "tab:blue"}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (key, scale, label) in zip(axes[0], panels):
        for arch in ("gpt2", "gptoss"):
            pts = [r for r in rows if r["arch"] == arch and r.get(key)]
            if pts:
                ax.scatter(
                    [r[key] / scale for r in pts], [r["final_val_loss"] for r in pts], color=colors[arch], label=arch
                )
                for r in pts:
                    tag = f"L{r['n_layers']}" + (f"E{r['num_experts']}" if arch == "gptoss" else "")
                    ax.annotate(
                        tag,
                        (r[key] / scale, r["final_val_loss"]),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        draw_references(ax, references or [])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final validation loss (nats/token)")
    axes[0][0].legend(title="architecture")
    fig.tight_layout()
    data = _fig_bytes(fig)
    plt.close(fig)
    return data


def plot_loss_vs_params(rows: list[dict], references: Optional[list] = None) -> bytes:
    return _scatter_panels(
        rows,
        [
            ("active_params", 1e6, "active parameters per token (millions)"),
            ("total_params", 1e6, "total parameters (millions)"),
        ],
        references,
    )


def plot_loss_vs_compute(rows: list[dict], references: Optional[list] = None) -> bytes:
    return _scatter_panels(
        rows,
        [
            ("train_flops", 1e12, "training compute (TFLOPs, forward + backward)"),
            ("train_s", 1, "training time (s in training steps, this machine)"),
        ],
        references,
    )
