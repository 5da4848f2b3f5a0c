"""Matplotlib figures for reports, rendered with the Agg canvas to PNG bytes.

Uses `matplotlib.figure.Figure` + `FigureCanvasAgg` directly (no pyplot), so nothing
changes the process-wide backend and figures never open windows.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

DPI = 90
SIZE = (6.4, 4.0)
C_TRIAL, C_BASE, C_BEST, C_FRONT, C_PRUNED = "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#9a9a9a"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _new(title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=SIZE)
    ax = fig.add_subplot(111)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def em_scatter(df: pd.DataFrame, x: str, xlabel: str, title: str, *, front: pd.DataFrame | None = None,
               best: int | None = None, logx: bool = False) -> bytes:
    """Exact match (with its 95% interval) against `x`, one point per trial; baseline, best
    trial and an optional Pareto front marked."""
    fig, ax = _new(title, xlabel, "exact match")
    d = df.dropna(subset=[x, "exact_match"])
    if len(d):
        yerr = None
        if d["em_ci_low"].notna().all() and len(d) <= 300:
            yerr = np.vstack([(d["exact_match"] - d["em_ci_low"]).clip(lower=0),
                              (d["em_ci_high"] - d["exact_match"]).clip(lower=0)])
        if yerr is not None:
            ax.errorbar(d[x], d["exact_match"], yerr=yerr, fmt="none", ecolor=C_TRIAL, alpha=0.25, lw=1)
        pruned = d["state"] != "COMPLETE"
        ax.scatter(d.loc[~pruned, x], d.loc[~pruned, "exact_match"], s=14, c=C_TRIAL, label="trial", zorder=3)
        if pruned.any():
            ax.scatter(d.loc[pruned, x], d.loc[pruned, "exact_match"], s=10, c=C_PRUNED, marker="x",
                       label="pruned (best before pruning)", zorder=2)
        b = d[d["baseline"]]
        if len(b):
            ax.scatter(b[x], b["exact_match"], s=70, marker="*", c=C_BASE, label="baseline", zorder=5)
        if best is not None and (d["number"] == best).any():
            bb = d[d["number"] == best]
            ax.scatter(bb[x], bb["exact_match"], s=60, facecolors="none", edgecolors=C_BEST, linewidths=2,
                       label=f"best (trial {best})", zorder=6)
        if front is not None and len(front):
            f = front.sort_values(x)
            ax.step(f[x], f["exact_match"], where="post", c=C_FRONT, lw=1.2, label="Pareto front", zorder=4)
        if logx and (d[x] > 0).all():
            ax.set_xscale("log")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no trial has both values", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def history(hist: pd.DataFrame, direction: str, label: str) -> bytes:
    fig, ax = _new(f"Optimization history ({label})", "trial", label)
    if len(hist):
        ax.scatter(hist["number"], hist["value"], s=10, c=C_TRIAL, label="trial", zorder=3)
        ax.step(hist["number"], hist["best_so_far"], where="post", c=C_FRONT, lw=1.4,
                label=f"best so far ({direction})")
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def intermediate(curves: dict[int, tuple[Sequence[float], Sequence[float], str]], label: str) -> bytes:
    """One line per trial: steps vs the reported value; pruned trials grey."""
    fig, ax = _new(f"Intermediate values ({label})", "step", label)
    colors = {"COMPLETE": C_TRIAL, "PRUNED": C_PRUNED}
    segs, cols = [], []
    xs, ys = [], []
    for _, (steps, vals, state) in curves.items():
        pts = np.column_stack([np.asarray(steps, float), np.asarray(vals, float)])
        if len(pts) == 1:
            xs.append(pts[0, 0])
            ys.append(pts[0, 1])
        segs.append(pts)
        cols.append(colors.get(state, C_FRONT))
    if segs:
        alpha = 0.8 if len(segs) <= 50 else 0.25
        ax.add_collection(LineCollection(segs, colors=cols, linewidths=1, alpha=alpha))
        if xs:
            ax.scatter(xs, ys, s=6, c=C_PRUNED, alpha=alpha)
        allpts = np.vstack(segs)
        ax.set_xlim(allpts[:, 0].min() - 0.5, allpts[:, 0].max() + 0.5)
        lo, hi = np.nanmin(allpts[:, 1]), np.nanmax(allpts[:, 1])
        pad = 0.05 * (hi - lo) if hi > lo else 0.05
        ax.set_ylim(lo - pad, hi + pad)
        from matplotlib.lines import Line2D
        ax.legend([Line2D([], [], c=C_TRIAL), Line2D([], [], c=C_PRUNED)], ["complete", "pruned"], fontsize=7)
    return _png(fig)


def importances(imp: pd.DataFrame, title: str) -> bytes:
    fig = Figure(figsize=(SIZE[0], max(2.0, 0.4 * len(imp) + 1.2)))
    ax = fig.add_subplot(111)
    d = imp.iloc[::-1]
    ax.barh(d["parameter"], d["importance"], color=C_TRIAL)
    ax.set_xlabel("importance")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def pareto_objectives(df: pd.DataFrame, xcol: str, ycol: str, xlabel: str, ylabel: str,
                      front_numbers: set[int]) -> bytes:
    fig, ax = _new("Pareto front", xlabel, ylabel)
    d = df.dropna(subset=[xcol, ycol])
    on = d["number"].isin(front_numbers)
    ax.scatter(d.loc[~on, xcol], d.loc[~on, ycol], s=10, c=C_PRUNED, label="dominated")
    ax.scatter(d.loc[on, xcol], d.loc[on, ycol], s=24, c=C_FRONT, label="Pareto front", zorder=3)
    ax.legend(fontsize=7)
    return _png(fig)
