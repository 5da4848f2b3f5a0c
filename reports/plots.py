"""Matplotlib figures for reports, rendered with the Agg canvas to PNG bytes.

Uses `matplotlib.figure.Figure` + `FigureCanvasAgg` directly (no pyplot), so nothing
changes the process-wide backend and figures never open windows.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colors as matplotlib_colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

DPI = 90
SIZE = (6.4, 4.0)
C_TRIAL, C_BASE, C_BEST, C_FRONT, C_PRUNED = "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#7f7f7f"
C_FAIL, C_RUNNING = "#8c1c13", "#9467bd"

# How each trial state is drawn, everywhere (scatter keyword arguments; label gets the count).
STATE_STYLE = {
    "COMPLETE": {"c": C_TRIAL, "marker": "o", "s": 20, "label": "complete"},
    "PRUNED": {"c": C_PRUNED, "marker": "x", "s": 30, "label": "pruned (last value)"},
    "FAIL": {"c": C_FAIL, "marker": "v", "s": 34, "label": "failed (no value)"},
    "RUNNING": {"c": C_RUNNING, "marker": "^", "s": 26, "label": "running (last value)"},
}
STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def png(fig: Figure) -> bytes:
    """PNG bytes of a figure made by one of the `fig_*` functions."""
    return _png(fig)


def _legend(ax, **kw) -> None:
    """A legend only of what is drawn: no entry without points, no empty legend box."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if lab and not lab.startswith("_")]
    if not keep:
        return
    if kw.pop("outside", False):   # beside the axes: never over the points
        kw.update(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.legend([h for h, _ in keep], [lab for _, lab in keep], fontsize=7, loc=kw.pop("loc", "best"), **kw)


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def _whiskers(ax, x, y, lo, hi, color, alpha=0.7) -> None:
    """95% interval whiskers that can be seen: solid, capped, drawn under the points."""
    ok = np.isfinite(np.asarray(lo, float)) & np.isfinite(np.asarray(hi, float))
    if not ok.any():
        return
    x, y, lo, hi = (np.asarray(v, float)[ok] for v in (x, y, lo, hi))
    yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
    ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=color, alpha=alpha, lw=1.1, capsize=2.5, zorder=2,
                label="_whiskers")


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
    return _png(fig_em_scatter(df, x, xlabel, title, front=front, best=best, logx=logx))


def fig_em_scatter(df: pd.DataFrame, x: str, xlabel: str, title: str, *, front: pd.DataFrame | None = None,
                   best: int | None = None, logx: bool = False) -> Figure:
    """Exact match (with its 95% interval) against `x`, one point per trial; baseline, best
    trial and an optional Pareto front marked."""
    fig, ax = _new(title, xlabel, "exact match")
    d = df.dropna(subset=[x, "exact_match"])
    if len(d):
        if len(d) <= 300:
            _whiskers(ax, d[x], d["exact_match"], d["em_ci_low"], d["em_ci_high"], C_TRIAL)
        for state in STATE_ORDER:
            part = d[d["state"] == state]
            if len(part):
                st = dict(STATE_STYLE[state])
                if state == "PRUNED":
                    st["label"] = "pruned (best before pruning)"
                st["label"] += f" ({len(part)})"
                ax.scatter(part[x], part["exact_match"], zorder=3 if state == "COMPLETE" else 4, **st)
        b = d[d["baseline"].astype(bool)]
        if len(b):
            ax.scatter(b[x], b["exact_match"], s=80, marker="*", c=C_BASE, label="baseline", zorder=5)
        if best is not None and (d["number"] == best).any():
            bb = d[d["number"] == best]
            ax.scatter(bb[x], bb["exact_match"], s=70, facecolors="none", edgecolors=C_BEST, linewidths=2,
                       label=f"best (trial {best})", zorder=6)
        if front is not None and len(front):
            f = front.sort_values(x)
            ax.step(f[x], f["exact_match"], where="post", c=C_FRONT, lw=1.2, label="Pareto front", zorder=4)
        if logx and (d[x] > 0).all():
            ax.set_xscale("log")
        _legend(ax, outside=True)
    else:
        ax.text(0.5, 0.5, "no trial has both values", ha="center", va="center", transform=ax.transAxes)
    return fig


def history(hist: pd.DataFrame, direction: str, label: str, others: pd.DataFrame | None = None) -> bytes:
    return _png(fig_history(hist, direction, label, others))


def fig_history(hist: pd.DataFrame, direction: str, label: str, others: pd.DataFrame | None = None) -> Figure:
    """Each completed trial's value in trial order and the best so far; `others` (columns
    number, state, value) adds pruned trials at their last reported value and failed trials
    on the axis, each state in the legend. Trial numbers are integers."""
    fig, ax = _new(f"Optimization history ({label})", "trial", label)
    if len(hist):
        st = dict(STATE_STYLE["COMPLETE"], s=14)
        st["label"] += f" ({len(hist)})"
        ax.scatter(hist["number"], hist["value"], zorder=3, **st)
        ax.step(hist["number"], hist["best_so_far"], where="post", c=C_FRONT, lw=1.4,
                label=f"best so far ({direction})")
    if others is not None and len(others):
        _state_points(ax, others, "number", "value", skip=("COMPLETE",))
    _integer_axis(ax.xaxis)
    _legend(ax, outside=True)
    return fig


def _state_points(ax, pts: pd.DataFrame, x: str, y: str, skip=()) -> None:
    """Scatter `pts` by state (STATE_STYLE), one legend entry per state with its count; rows
    without a y value (failed trials, trials pruned before any evaluation) are drawn on the
    bottom edge of the axes at their x."""
    for state in STATE_ORDER:
        if state in skip:
            continue
        part = pts[pts["state"] == state]
        if not len(part):
            continue
        has = part[y].notna().to_numpy()
        if has.any():
            st = dict(STATE_STYLE[state])
            st["label"] += f" ({int(has.sum())})"
            ax.scatter(part.loc[has, x], part.loc[has, y], zorder=4, **st)
        if (~has).any():
            st = dict(STATE_STYLE[state])
            if state != "FAIL":   # e.g. pruned before launch as infeasible, or before its first evaluation
                st.update(facecolors="none", edgecolors=st.pop("c"), marker="o", s=22,
                          label=f"{state.lower()} before any evaluation")
            st["label"] += f" ({int((~has).sum())})"
            ax.scatter(part.loc[~has, x], np.full(int((~has).sum()), 0.03), transform=ax.get_xaxis_transform(),
                       clip_on=False, zorder=4, **st)
            # drawn in axes coordinates for y: make the x range include them
            ax.dataLim.update_from_data_x(np.asarray(part.loc[~has, x], float), ignore=False)
            ax.autoscale_view()


def intermediate(curves: dict[int, tuple[Sequence[float], Sequence[float], str]], label: str) -> bytes:
    return _png(fig_intermediate(curves, label))


def fig_intermediate(curves: dict[int, tuple[Sequence[float], Sequence[float], str]], label: str) -> Figure:
    """One line per trial: steps vs the reported value, coloured by state; a pruned trial's
    line ends in an x at the step where it was stopped."""
    from matplotlib.lines import Line2D

    fig, ax = _new(f"Intermediate values ({label})", "step", label)
    colors = {s: STATE_STYLE[s]["c"] for s in STATE_ORDER}
    segs, cols, states = [], [], []
    ends = {s: [] for s in STATE_ORDER}
    for _, (steps, vals, state) in curves.items():
        pts = np.column_stack([np.asarray(steps, float), np.asarray(vals, float)])
        if not len(pts):
            continue
        segs.append(pts)
        cols.append(colors.get(state, C_FRONT))
        states.append(state)
        if state in ends and (len(pts) == 1 or state != "COMPLETE"):
            ends[state].append(pts[-1])
    if segs:
        many = len(segs) > 50
        alphas = [(0.35 if many else 0.85) if st == "COMPLETE" else (0.6 if many else 0.9) for st in states]
        rgba = [matplotlib_colors.to_rgba(c, a) for c, a in zip(cols, alphas)]
        ax.add_collection(LineCollection(segs, colors=rgba, linewidths=1))
        for state, pts in ends.items():
            if pts:
                p = np.vstack(pts)
                ax.scatter(p[:, 0], p[:, 1], s=18 if state != "COMPLETE" else 8, c=colors[state],
                           marker=STATE_STYLE[state]["marker"], zorder=3, label="_end")
        allpts = np.vstack(segs)
        ax.set_xlim(allpts[:, 0].min() - 0.5, allpts[:, 0].max() + 0.5)
        lo, hi = np.nanmin(allpts[:, 1]), np.nanmax(allpts[:, 1])
        pad = 0.05 * (hi - lo) if hi > lo else 0.05
        ax.set_ylim(lo - pad, hi + pad)
        handles, labels = [], []
        for state in STATE_ORDER:
            n = states.count(state)
            if n:
                handles.append(Line2D([], [], c=colors[state], marker=STATE_STYLE[state]["marker"] if state != "COMPLETE"
                                      else None))
                labels.append(f"{STATE_STYLE[state]['label'].split(' (')[0]} ({n})")
        ax.legend(handles, labels, fontsize=7)
    return fig


def importances(imp: pd.DataFrame, title: str, method: str | None = None) -> bytes:
    return _png(fig_importances(imp, title, method))


def fig_importances(imp: pd.DataFrame, title: str, method: str | None = None) -> Figure:
    """Horizontal bars, the method (fANOVA, PED-ANOVA, |Spearman|) in the title and axis label."""
    fig = Figure(figsize=(SIZE[0], max(2.0, 0.4 * len(imp) + 1.2)))
    ax = fig.add_subplot(111)
    d = imp.iloc[::-1]
    ax.barh(d["parameter"], d["importance"], color=C_TRIAL)
    ax.set_xlabel(f"importance ({method})" if method else "importance")
    ax.set_title(f"{title}: {method}" if method else title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def pareto_objectives(df: pd.DataFrame, xcol: str, ycol: str, xlabel: str, ylabel: str,
                      front_numbers: set[int], title: str = "Pareto front") -> bytes:
    return _png(fig_pareto(df, xcol, ycol, xlabel, ylabel, front_numbers, title))


def fig_pareto(df: pd.DataFrame, xcol: str, ycol: str, xlabel: str, ylabel: str,
               front_numbers: set[int], title: str = "Pareto front") -> Figure:
    """Dominated trials grey, the non-dominated ones red, joined in order and numbered."""
    fig, ax = _new(title, xlabel, ylabel)
    d = df.dropna(subset=[xcol, ycol])
    on = d["number"].isin(front_numbers)
    if (~on).any():
        ax.scatter(d.loc[~on, xcol], d.loc[~on, ycol], s=12, c=C_PRUNED, label=f"dominated ({int((~on).sum())})")
    if on.any():
        f = d[on].sort_values([xcol, ycol])
        ax.plot(f[xcol], f[ycol], c=C_FRONT, lw=1, alpha=0.6, zorder=2, label="_front line")
        ax.scatter(f[xcol], f[ycol], s=30, c=C_FRONT, label=f"Pareto front ({len(f)})", zorder=3)
        for n, xv, yv in zip(f["number"], f[xcol], f[ycol]):
            ax.annotate(str(int(n)), (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if not len(d):
        ax.text(0.5, 0.5, "no completed trial has both values", ha="center", va="center", transform=ax.transAxes)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ the sweep's own question

def _axis_values(v: pd.Series, kind: str) -> tuple[np.ndarray, list[str] | None]:
    """Numbers to plot for a parameter's values, and tick labels for categorical ones."""
    if kind == "categorical":
        cats = sorted({str(x) for x in v.dropna()})
        pos = {c: i for i, c in enumerate(cats)}
        return np.array([pos.get(str(x), np.nan) if x is not None else np.nan for x in v], float), cats
    return pd.to_numeric(v, errors="coerce").to_numpy(float), None


def fig_objective_vs_param(pts: pd.DataFrame, param: str, *, kind: str = "float", log: bool = False,
                           label: str = "exact match", best: int | None = None) -> Figure:
    """The plot a sweep over `param` exists for: the objective of each trial against the
    parameter's value. `pts` has columns number, state, x, y, ci_low, ci_high, baseline:
    complete trials at their value with the 95% interval, pruned ones at their last reported
    value, failed ones (no value) on the bottom edge. Log x axis for a log-scale space; integer
    ticks for an int space; categories by name."""
    fig, ax = _new(f"{label} vs {param}" + (" (log scale)" if log else ""), param, label)
    xs, cats = _axis_values(pts["x"], kind) if len(pts) else (np.array([]), None)
    d = pts.assign(xv=xs)
    d = d[np.isfinite(d["xv"])] if len(d) else d
    done = d[d["state"] == "COMPLETE"] if len(d) else d
    if len(done) and len(done) <= 300:
        _whiskers(ax, done["xv"], done["y"], done["ci_low"], done["ci_high"], C_TRIAL)
    if len(d):
        _state_points(ax, d, "xv", "y")
        b = d[d["baseline"].astype(bool) & d["y"].notna()]
        if len(b):
            ax.scatter(b["xv"], b["y"], s=90, marker="*", c=C_BASE, label="baseline", zorder=5)
        if best is not None and (done["number"] == best).any():
            bb = done[done["number"] == best]
            ax.scatter(bb["xv"], bb["y"], s=80, facecolors="none", edgecolors=C_BEST, linewidths=2,
                       label=f"best (trial {best})", zorder=6)
    else:
        ax.text(0.5, 0.5, "no trial has a value of this parameter", ha="center", va="center",
                transform=ax.transAxes)
    if log and len(d) and (d["xv"] > 0).all():
        ax.set_xscale("log")
    if kind == "int":
        _integer_axis(ax.xaxis)
    if cats is not None:
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, fontsize=8)
    _legend(ax, outside=True)
    return fig


def fig_contour(pts: pd.DataFrame, p1: str, p2: str, *, kinds=("float", "float"), logs=(False, False),
                label: str = "exact match") -> Figure:
    """Two searched parameters against each other: completed trials coloured by the objective
    over a filled contour of it (triangulated in the axes' own scale: log10 for a log space),
    pruned and failed trials marked by state."""
    from matplotlib.ticker import FuncFormatter

    fig, ax = _new(f"{label} over {p1} and {p2}", p1 + (" (log scale)" if logs[0] else ""),
                   p2 + (" (log scale)" if logs[1] else ""))
    cols = {}
    for name, col, kind, lg in ((p1, "x", kinds[0], logs[0]), (p2, "x2", kinds[1], logs[1])):
        v, cats = _axis_values(pts[col], kind) if len(pts) else (np.array([]), None)
        if lg:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(v > 0, np.log10(v), np.nan)
        cols[col] = (v, cats, lg)
    d = pts.assign(u=cols["x"][0], v=cols["x2"][0]) if len(pts) else pts.assign(u=[], v=[])
    d = d[np.isfinite(d["u"]) & np.isfinite(d["v"])] if len(d) else d
    done = d[(d["state"] == "COMPLETE") & d["y"].notna()] if len(d) else d
    fig.contour_drawn = False
    if len(done) >= 4 and done["u"].nunique() > 1 and done["v"].nunique() > 1:
        try:
            import matplotlib.tri as mtri
            tri = mtri.Triangulation(done["u"].to_numpy(float), done["v"].to_numpy(float))
            cs = ax.tricontourf(tri, done["y"].to_numpy(float), levels=10, cmap="viridis", alpha=0.55, zorder=1)
            fig.colorbar(cs, ax=ax, label=label)
            fig.contour_drawn = True
        except (ValueError, RuntimeError):   # collinear points: no triangulation, points only
            pass
    if len(done):
        sc = ax.scatter(done["u"], done["v"], c=done["y"], cmap="viridis", s=28, edgecolors="k", linewidths=0.5,
                        zorder=3, label=f"complete ({len(done)})")
        if not fig.contour_drawn:
            fig.colorbar(sc, ax=ax, label=label)
    rest = d[d["state"] != "COMPLETE"] if len(d) else d
    for state in STATE_ORDER[1:]:
        part = rest[rest["state"] == state] if len(rest) else rest
        if len(part):
            st = dict(STATE_STYLE[state])
            st["label"] = f"{state.lower()} ({len(part)})"
            ax.scatter(part["u"], part["v"], zorder=4, **st)
    for axis, (v, cats, lg), kind in ((ax.xaxis, cols["x"], kinds[0]), (ax.yaxis, cols["x2"], kinds[1])):
        if lg:
            axis.set_major_formatter(FuncFormatter(lambda t, _: f"{10 ** t:.2g}"))
        elif cats is not None:
            axis.set_ticks(range(len(cats)))
            axis.set_ticklabels(cats, fontsize=8)
        elif kind == "int":
            _integer_axis(axis)
    if not len(d):
        ax.text(0.5, 0.5, "no trial has both parameters", ha="center", va="center", transform=ax.transAxes)
    _legend(ax, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=3)
    return fig
