"""The advisor's coverage curve as a PNG (``prodml advise --png``).

A module of its own so that the advice itself never imports matplotlib (it is imported here, in
the function, too: a function instance that only advises never loads it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.tables.advisor import Advice


def plot_coverage(advice: Advice, path: Path) -> Path:
    """Write the coverage curve as a PNG: share of requests against share of the key space (log x)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: functions, CI and terminals alike
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        card = max(advice.cardinality, 1)
        for curve, label, style in (
            (advice.in_sample, "all counted traffic (in sample)", "-"),
            (advice.held_out, "held-out half (what a table would answer)", "--"),
        ):
            if len(curve):
                x = np.arange(1, len(curve) + 1) / card
                ax.plot(x, curve, style, label=label)
        if advice.table_max_rows < card:
            ax.axvline(advice.table_max_rows / card, color="grey", linestyle=":", label="TABLE_MAX_ROWS")
        if advice.k:
            ax.axvline(advice.k / card, color="red", linewidth=1)
            if advice.expected_hit_rate is not None:
                ax.plot([advice.k / card], [advice.expected_hit_rate], "o", color="red")
            ax.annotate(
                f"K={advice.k:,}",
                (advice.k / card, 0.03),
                color="red",
                xytext=(4, 0),
                textcoords="offset points",
            )
        if not len(advice.in_sample):
            ax.text(0.5, 0.5, "no traffic counted yet", transform=ax.transAxes, ha="center")
        ax.set_xscale("log")
        ax.set_xlim(1 / card, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"share of the key space (top K keys / {card:,})")
        ax.set_ylabel("share of requests answered")
        ax.set_title(f"coverage by the most requested keys: {advice.recommendation}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
