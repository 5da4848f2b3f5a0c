"""The plots a sweep exists for (exact match against each searched parameter, a contour of two),
the plot fixes (whiskers, legends, integer trial axes, every state, importance method, too few
trials) and the baseline column, checked on the matplotlib figures and the data they plot."""

import math

import numpy as np
import optuna
import pytest
from matplotlib.ticker import MaxNLocator

from reports import plots
from reports.build import build_report, param_points

D = optuna.distributions
TS = optuna.trial.TrialState
DISTS = {"learning_rate": D.FloatDistribution(1e-4, 1e-1, log=True), "warmup_steps": D.IntDistribution(0, 10)}


def _trial(state, lr, warm, *, value=None, iv=None, baseline=False, **attrs):
    ua = dict(attrs)
    if baseline:
        ua["baseline"] = True
    if state == TS.COMPLETE:
        ua.setdefault("exact_match", value)
        ua.setdefault("eval_examples", 100)
    return optuna.trial.create_trial(state=state, value=value if state == TS.COMPLETE else None,
                                     params={"learning_rate": lr, "warmup_steps": warm}, distributions=DISTS,
                                     intermediate_values=iv or {}, user_attrs=ua)


def lr_study(n_complete=8):
    """Completed trials on a peaked response, pruned ones with intermediate values, failed ones."""
    study = optuna.create_study(study_name="lr", direction="maximize")
    study.set_user_attr("fingerprint", {"objectives": "exact_match"})
    rng = np.random.RandomState(0)
    for i in range(n_complete):
        lr = float(10 ** rng.uniform(-4, -1))
        em = round(max(0.0, 0.5 - 0.2 * abs(math.log10(lr / 3e-3))), 2)
        study.add_trial(_trial(TS.COMPLETE, lr, int(rng.randint(0, 11)), value=em, iv={50: em / 2, 100: em},
                               baseline=(i == 0)))
    pruned = {}
    for i in range(5):
        lr = float(10 ** rng.uniform(-4, -1))
        last = 0.01 * (i + 1)
        study.add_trial(_trial(TS.PRUNED, lr, i, iv={50: last / 2, 100: last}, pruned_at_step=100))
        pruned[lr] = last
    failed = []
    for i in range(2):
        lr = 0.05 + 0.01 * i
        study.add_trial(_trial(TS.FAIL, lr, 3, failure_reason="training diverged at step 30: loss is not finite"))
        failed.append(lr)
    return study, pruned, failed


def _labels(ax):
    return [t.get_text() for t in ax.get_legend().texts] if ax.get_legend() else []


def _series(ax):
    """label -> offsets (data coordinates) of every labelled scatter collection."""
    return {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections if not c.get_label().startswith("_")}


def test_objective_vs_each_searched_parameter():
    study, pruned, failed = lr_study()
    figs = {}
    rep = build_report(study, figures=figs)
    assert {"em_vs_learning_rate.png", "em_vs_warmup_steps.png", "contour.png"} <= set(rep.images)
    assert "params" in [s.key for s in rep.sections]
    md_images = [b[1][0] for b in rep.section("params").blocks if b[0] == "image"]
    assert md_images == ["em_vs_learning_rate.png", "em_vs_warmup_steps.png", "contour.png"]

    fig, pts = figs["em_vs_learning_rate.png"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"                        # the space is log
    s = _series(ax)
    assert set(s) >= {"complete (8)", "pruned (last value) (5)", "failed (no value) (2)", "baseline"}
    # completed trials at their exact match; pruned ones at the last value they reported
    done = pts[pts["state"] == "COMPLETE"]
    assert sorted(s["complete (8)"][:, 1]) == pytest.approx(sorted(done["y"]))
    got = {round(x, 12): y for x, y in s["pruned (last value) (5)"]}
    assert got == pytest.approx({round(lr, 12): v for lr, v in pruned.items()})
    # failed trials have no value: drawn at their learning rate on the bottom edge
    assert sorted(s["failed (no value) (2)"][:, 0]) == pytest.approx(failed)
    assert pts[pts["state"] == "FAIL"]["y"].isna().all()
    # visible 95% whiskers for completed trials
    bars = [c for c in ax.collections if c.get_label() == "_whiskers" or type(c).__name__ == "LineCollection"]
    assert bars and all((c.get_alpha() or 1) >= 0.5 for c in bars)
    assert len(_labels(ax)) == len(set(_labels(ax)))         # one entry per series, none empty

    fig, pts = figs["em_vs_warmup_steps.png"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
    assert ax.xaxis.get_major_locator()._integer

    fig, pts = figs["contour.png"]
    assert getattr(fig, "contour_drawn", False)
    assert set(pts.columns) >= {"x", "x2", "y", "state"} and len(pts) == 15
    ax = fig.axes[0]
    assert {"complete (8)", "pruned (5)", "fail (2)"} <= set(_series(ax))


def test_param_points_use_the_last_reported_value_for_pruned_trials():
    study, pruned, _ = lr_study()
    from reports.data import load_study_data
    pts = param_points(load_study_data(study), "learning_rate")
    p = pts[pts["state"] == "PRUNED"]
    assert dict(zip(p["x"].round(12), p["y"])) == pytest.approx({round(k, 12): v for k, v in pruned.items()})


def test_plots_have_no_empty_legend_entries_and_no_duplicates():
    study, _, _ = lr_study()
    rep = build_report(study)
    pngs = list(rep.images.values())
    assert len(set(pngs)) == len(pngs)                      # no two plots are the same picture
    # an all-complete study: no "pruned" entry in any legend
    only_done = optuna.create_study(direction="maximize")
    for i, lr in enumerate((1e-3, 3e-3, 1e-2)):
        only_done.add_trial(_trial(TS.COMPLETE, lr, i, value=0.1 * i, iv={100: 0.1 * i}))
    figs = {}
    build_report(only_done, figures=figs)
    ax = figs["em_vs_learning_rate.png"][0].axes[0]
    assert not any("pruned" in t or "fail" in t for t in _labels(ax))
    import pandas as pd
    f = plots.fig_intermediate({0: ([100], [0.1], "COMPLETE")}, "exact match")
    assert _labels(f.axes[0]) == ["complete (1)"]
    f = plots.fig_history(pd.DataFrame({"number": [0, 1], "value": [0.1, 0.2], "best_so_far": [0.1, 0.2]}),
                          "maximize", "exact match")
    assert "pruned" not in " ".join(_labels(f.axes[0]))


def test_history_shows_every_state_on_an_integer_trial_axis():
    import pandas as pd
    hist = pd.DataFrame({"number": [0, 3], "value": [0.2, 0.4], "best_so_far": [0.2, 0.4]})
    others = pd.DataFrame({"number": [1, 2, 4], "state": ["PRUNED", "FAIL", "RUNNING"], "value": [0.05, None, 0.1]})
    fig = plots.fig_history(hist, "maximize", "exact match", others)
    ax = fig.axes[0]
    labels = _labels(ax)
    for want in ("complete (2)", "pruned (last value) (1)", "failed (no value) (1)", "running (last value) (1)"):
        assert want in labels, labels
    loc = ax.xaxis.get_major_locator()
    assert isinstance(loc, MaxNLocator) and loc._integer
    # pruned trials are drawn (at their last value), not hidden behind completed ones
    s = _series(ax)
    assert s["pruned (last value) (1)"].tolist() == [[1.0, 0.05]]


def test_intermediate_plot_marks_pruned_trials_and_names_every_state():
    curves = {0: ([50, 100], [0.1, 0.3], "COMPLETE"), 1: ([50], [0.0], "PRUNED"), 2: ([50], [0.02], "PRUNED")}
    ax = plots.fig_intermediate(curves, "exact match").axes[0]
    assert _labels(ax) == ["complete (1)", "pruned (2)"]
    ends = [c for c in ax.collections if c.get_label() == "_end"]
    assert any(np.allclose(sorted(map(tuple, c.get_offsets())), [(50, 0.0), (50, 0.02)]) for c in ends)
    lines = next(c for c in ax.collections if type(c).__name__ == "LineCollection")
    assert min(rgba[3] for rgba in lines.get_colors()) >= 0.35       # pruned lines visible


def test_importance_method_is_named_and_too_few_trials_says_so():
    import pandas as pd
    fig = plots.fig_importances(pd.DataFrame({"parameter": ["learning_rate"], "importance": [1.0]}),
                                "Parameter importance (exact match)", "fANOVA")
    assert "fANOVA" in fig.axes[0].get_title() and "fANOVA" in fig.axes[0].get_xlabel()
    study = optuna.create_study(direction="maximize")
    for lr, v in ((1e-3, 0.1), (3e-3, 0.2)):
        study.add_trial(_trial(TS.COMPLETE, lr, int(lr * 1000), value=v))
    rep = build_report(study)
    text = " ".join(b[1] for b in rep.section("importances").blocks if b[0] == "text")
    assert "too few trials" in text.lower()
    assert "importances.png" not in rep.images                       # no chart from 2 trials
    study, _, _ = lr_study(n_complete=8)
    rep = build_report(study)
    text = " ".join(b[1] for b in rep.section("importances").blocks if b[0] == "text")
    assert "importances.png" in rep.images and ("fANOVA" in text or "PED-ANOVA" in text)


def _best_table(rep):
    t = rep.csvs["best.csv"]
    return {c: dict(zip(t[""], t[c])) for c in t.columns if c}


def test_baseline_column_is_the_completed_baseline():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(TS.COMPLETE, 3e-3, 4, value=0.25, baseline=True))
    study.add_trial(_trial(TS.COMPLETE, 1e-3, 2, value=0.30))
    cols = _best_table(build_report(study))
    assert cols["baseline (guide default)"]["trial"] == "0"
    assert cols["baseline (guide default)"]["exact match [95% CI]"].startswith("0.250")


def test_retried_baseline_counts_and_a_failed_one_does_not():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(TS.FAIL, 3e-3, 4, baseline=True, failure_reason="RuntimeError: worker killed"))
    study.add_trial(_trial(TS.COMPLETE, 1e-3, 2, value=0.30))
    study.add_trial(_trial(TS.COMPLETE, 3e-3, 4, value=0.25, baseline=True, retry_of=0, retries=1))
    rep = build_report(study)
    cols = _best_table(rep)
    assert cols["baseline (guide default)"]["trial"] == "2"
    assert cols["baseline (guide default)"]["state"] == "COMPLETE"
    text = " ".join(b[1] for b in rep.section("best").blocks if b[0] == "text")
    assert "vs baseline (trial 2)" in text and "trial 0 FAIL" in text


def test_only_failed_baseline_has_no_column():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(TS.FAIL, 3e-3, 4, baseline=True, failure_reason="RuntimeError: out of memory"))
    study.add_trial(_trial(TS.COMPLETE, 1e-3, 2, value=0.30))
    rep = build_report(study)
    cols = _best_table(rep)
    assert "baseline (guide default)" not in cols
    text = " ".join(b[1] for b in rep.section("best").blocks if b[0] == "text")
    assert "every run of the baseline failed" in text and "vs baseline" not in text
