"""Number formatting and plot helpers that the report's sections share."""

from __future__ import annotations

import math


def fmt_tokens(n: float) -> str:
    """Token counts as 8.2k, 1.05M, 4.19G."""
    if not math.isfinite(n):
        return "inf"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}" if n < 100 * scale else f"{n / scale:.0f}{unit}"
    return f"{n:.0f}"


def draw_references(ax, references: list[tuple[str, float, float]]) -> None:
    """Count-based reference models as dashed horizontal lines, labelled at the right edge."""
    for name, nats, _bpb in references:
        ax.axhline(nats, color="gray", linestyle="--", linewidth=0.9)
        ax.annotate(
            name, (1.0, nats), xycoords=("axes fraction", "data"), fontsize=7, color="gray", ha="right", va="bottom"
        )
