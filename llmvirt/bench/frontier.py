"""The tuning sweep as a Pareto frontier: every grid point's cost components against each other.

A tuned baseline is one point of its family's sweep, picked by one weighted cost; the frontier shows
what the other weightings would have picked. A point is on the frontier when no other point of the
sweep is at least as good on every component and better on one (all components are to be minimised).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PANELS = (("energy_kwh", "unmet_demand_pct", "energy (kWh/day)", "unmet demand (%)"),
          ("energy_kwh", "gib_migrated", "energy (kWh/day)", "GiB migrated per day"))


def pareto(points: list[dict[str, Any]], keys: tuple[str, ...]) -> list[bool]:
    """For each point, whether no other point dominates it on ``keys`` (lower is better)."""
    x = np.array([[float(p[k]) for k in keys] for p in points]) if points else np.zeros((0, len(keys)))
    out = []
    for i in range(len(points)):
        dominated = np.all(x <= x[i], axis=1) & np.any(x < x[i], axis=1)
        out.append(not bool(dominated.any()))
    return out


def frontier_rows(doc: dict[str, Any], keys: tuple[str, ...] = ("energy_kwh", "unmet_demand_pct", "gib_migrated")
                  ) -> list[dict[str, Any]]:
    """Every grid point of every family in a ``policies/tuned.json`` document, with whether it is on the
    frontier of the whole sweep (all families together) and whether it is its family's tuned choice."""
    points = [{"family": fam, **p, "tuned": p["name"] == body["best"]}
              for fam, body in doc["families"].items() for p in body["grid"]]
    for p, on in zip(points, pareto(points, keys), strict=True):
        p["on_frontier"] = on
    return points


def plot(doc: dict[str, Any], path: Path) -> None:
    """Two panels (energy against unmet demand, energy against GiB moved): each family's sweep, its tuned
    point starred, the frontier of the whole sweep as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frontier_rows(doc)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (kx, ky, lx, ly) in zip(axes, PANELS, strict=True):
        for fam in doc["families"]:
            pts = [r for r in rows if r["family"] == fam]
            dots = ax.scatter([r[kx] for r in pts], [r[ky] for r in pts], s=18, label=fam, alpha=0.8)
            best = [r for r in pts if r["tuned"]]
            ax.scatter([r[kx] for r in best], [r[ky] for r in best], s=160, marker="*", edgecolors="black",
                       color=dots.get_facecolor()[0])
        on = [r for r, f in zip(rows, pareto(rows, (kx, ky)), strict=True) if f]
        on.sort(key=lambda r: r[kx])
        ax.plot([r[kx] for r in on], [r[ky] for r in on], color="black", linewidth=1, label="frontier")
        ax.set_xlabel(lx)
        ax.set_ylabel(ly)
        ax.set_yscale("symlog", linthresh=0.01 if ky == "unmet_demand_pct" else 1000)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    days = ", ".join(doc.get("train_days", []))
    fig.suptitle(f"Tuning sweep, {doc.get('scenario', '')} scenario, training days {days} "
                 "(star: each family's pick by the cost)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
