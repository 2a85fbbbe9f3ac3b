"""bench/chart.py — owns the benchmark chart (bench/results/latest.png).

One horizontal bar per (row, loop): the baseline's median ÷ the loop's median, on a log axis,
so >1 (right of the black line) means faster (or, for memory rows, smaller) than stock
asyncio. Rows are grouped as in the table, the groups split over two panels side by side; a
loop that could not run a row shows "n/a" in place of its bar. matplotlib's Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

COLORS = {
    "uvloop": "#4c72b0",
    "rloop": "#55a868",
    "ferroloop": "#e8702a",
    "ferroloop-asyncio-tasks": "#9c3208",
}


def _split(groups: list[tuple[str, list[str]]]) -> list[list[tuple[str, list[str]]]]:
    """Split the groups (in order) into two columns of about the same number of rows."""
    total = sum(len(ws) for _, ws in groups)
    left, count = [], 0
    for i, (g, ws) in enumerate(groups):
        if left and count + len(ws) / 2 > total / 2:
            return [left, groups[i:]]
        left.append((g, ws))
        count += len(ws)
    return [left]


def draw(
    path: Path,
    rows: list[str],
    loops: list[str],
    medians: dict,
    registry: dict,
    baseline: str,
    subtitle: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    shown = [lp for lp in loops if lp != baseline] or list(loops)
    groups: list[tuple[str, list[str]]] = []
    for w in rows:
        g = registry[w].group
        if not groups or groups[-1][0] != g:
            groups.append((g, []))
        groups[-1][1].append(w)
    columns = _split(groups)

    ratios = [
        medians[(w, baseline)] / medians[(w, lp)]
        for w in rows
        for lp in shown
        if medians.get((w, baseline)) and medians.get((w, lp))
    ]
    lo = min(ratios + [0.8])
    hi = max(ratios + [2.0])
    xlim = (10 ** (math.floor(math.log10(lo) * 4) / 4), 10 ** (math.ceil(math.log10(hi) * 4) / 4))

    per_row = 0.22 + 0.11 * len(shown)  # inches per row
    lines = max(sum(len(ws) for _, ws in col) + 1.5 * len(col) for col in columns)
    fig, axes = plt.subplots(
        1,
        len(columns),
        figsize=(8.5 * len(columns), 1.6 + per_row * lines),
        squeeze=False,
    )
    bar = 0.8 / len(shown)
    for ax, col in zip(axes[0], columns, strict=True):
        y = 0.0
        ticks, labels = [], []
        for g, ws in col:
            y += 0.3
            ax.text(
                0.005,
                y + 0.35,
                g,
                transform=ax.get_yaxis_transform(),
                fontsize=8,
                fontweight="bold",
                va="center",
            )
            y += 1.2
            for w in ws:
                ticks.append(y)
                labels.append(f"{w}\n({registry[w].unit})")
                base = medians.get((w, baseline))
                for i, lp in enumerate(shown):
                    yy = y - 0.4 + bar * (i + 0.5)
                    m = medians.get((w, lp))
                    if base and m:
                        x = base / m
                        ax.barh(yy, x, height=bar * 0.92, color=COLORS.get(lp))
                        ax.text(x, yy, f" {x:.2f}", va="center", fontsize=5.5)
                    else:
                        ax.text(xlim[0], yy, " n/a", va="center", fontsize=5.5, color="#999999")
                y += 1.0
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(y - 0.3, 0)
        ax.axvline(1.0, color="black", linewidth=0.9)
        ax.set_yticks(ticks)
        ax.set_yticklabels(labels, fontsize=6.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", which="both", color="#e4e4e4", linewidth=0.5)
        ax.set_axisbelow(True)
        ax.set_xlabel(f"{baseline} median ÷ loop median (log scale)", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS.get(lp)) for lp in shown]
    fig.legend(handles, shown, loc="upper right", ncol=len(shown), fontsize=8, frameon=False)
    fig.suptitle(
        f"ferroloop benchmark — speed-up vs stock {baseline} (>1× = faster, or smaller memory)\n"
        f"{subtitle}",
        fontsize=9,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
