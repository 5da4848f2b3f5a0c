"""The study report end to end: every section from a realistic study (fake objective storing what
run_trial stores), multi-objective Pareto front, status, the CLI, and the 2,000-trial scale."""

import re
import time

import optuna
import pandas as pd
import pytest

from reports.build import SECTION_KEYS, build_report, pareto_front_2d, write_report
from reports.demo import make_demo_study
from studies.cli import _main

SECTION_TITLES = ["Summary", "Trials", "Best trials and the baseline", "Exact match vs the searched parameters",
                  "Exact match vs peak memory",
                  "Exact match vs throughput", "Pareto front", "Optimization history", "Intermediate values",
                  "Parameter importances", "Feasibility", "Diagnosis"]
PNGS = ["em_vs_memory.png", "em_vs_throughput.png", "pareto.png", "history.png", "intermediate.png",
        "importances.png",
        # exact match vs each searched parameter of the demo study, and the contour of two
        "em_vs_learning_rate.png", "em_vs_warmup_steps.png", "em_vs_router_aux_loss_coef.png",
        "em_vs_expert_capacity.png", "contour.png"]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    url = f"sqlite:///{tmp}/studies.db"
    make_demo_study(60, storage=url, study_name="joint-tiny-synthetic")
    return tmp, url


def md_sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_cli_report_has_every_section_filled(demo_db, capsys):
    tmp, url = demo_db
    out = tmp / "rep"
    assert _main(["report", "joint-tiny-synthetic", "--storage", url, "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    secs = md_sections(md)
    for title in SECTION_TITLES:
        body = next((b for t, b in secs.items() if t.startswith(title)), None)
        assert body is not None, f"section {title} missing"
        text = re.sub(r"<a id=\"\w+\"></a>", "", body).strip()
        assert len(text) > 40, f"section {title} is empty: {text!r}"
    for png in PNGS:
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, png
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(PNGS)
    assert not re.search(r"""(src|href)=["']https?://""", html)  # self-contained
    for key in SECTION_KEYS:
        assert f'<section id="{key}">' in html
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 60
    for col in ("number", "state", "baseline", "param_learning_rate", "exact_match", "em_ci_low", "em_ci_high",
                "valid_sql", "eval_loss", "peak_memory_mb", "tokens_per_sec", "wall_time_s", "pruned_at_step",
                "infeasible_reason"):
        assert col in trials.columns, col
    # Wilson interval over the eval examples brackets every exact match
    em = trials.dropna(subset=["exact_match"])
    assert ((em["em_ci_low"] <= em["exact_match"]) & (em["exact_match"] <= em["em_ci_high"])).all()
    assert trials["baseline"].sum() == 1 and bool(trials.loc[trials["number"] == 0, "baseline"].iloc[0])
    # the report counts infeasible trials and names the guide's remedies next to the evidence
    n_inf = int(trials["infeasible_reason"].notna().sum())
    assert n_inf > 0 and f"**{n_inf} of 60 trials**" in secs[next(t for t in secs if t.startswith("Feasibility"))]
    diag = secs[next(t for t in secs if t.startswith("Diagnosis"))]
    assert "Expert Collapse" in diag and "router_aux_loss_coef: 0.02" in diag
    assert "Out of Memory" in diag and "gradient_checkpointing" in diag
    best = secs["Best trials and the baseline"]
    assert "baseline (guide default)" in best and "best exact match" in best
    assert "best peak memory (MB)" in best and "best tokens/s" in best
    for csv in ("best.csv", "pareto.csv", "history.csv", "intermediate.csv", "importances.csv", "diagnosis.csv",
                "em_vs_memory.csv", "em_vs_throughput.csv", "infeasible.csv"):
        assert (out / csv).stat().st_size > 20, csv


def test_report_numbers_match_the_study(demo_db):
    _, url = demo_db
    study = optuna.load_study(study_name="joint-tiny-synthetic", storage=url)
    rep = build_report(study)
    best = study.best_trial
    summary = rep.section("summary").blocks[0][1]
    assert f"trial {best.number};" in summary and f"{best.value:.3f}" in summary
    hist = rep.csvs["history.csv"]
    assert hist["best_so_far"].iloc[-1] == pytest.approx(best.user_attrs["exact_match"])
    iv = rep.csvs["intermediate.csv"]
    n_iv = sum(len(t.intermediate_values) for t in study.trials)
    assert len(iv) >= n_iv > 0
    front = rep.csvs["pareto.csv"]
    assert len(front) >= 1
    assert rep.csvs["importances.csv"]["importance"].sum() > 0


def test_pareto_front_2d_is_non_dominated():
    df = pd.DataFrame({"number": range(6), "state": ["COMPLETE"] * 5 + ["PRUNED"],
                       "peak_memory_mb": [100, 120, 110, 200, 90, 50],
                       "exact_match": [0.3, 0.5, 0.2, 0.5, 0.1, 0.9]})
    front = pareto_front_2d(df, "peak_memory_mb")
    assert sorted(front["number"]) == [0, 1, 4]  # 2 dominated by 0, 3 by 1 (same EM, more memory), 5 pruned


def test_multi_objective_report_uses_best_trials(tmp_path):
    study = make_demo_study(30, multi=True, study_name="mo")
    out = write_report(study, tmp_path)
    md = (out / "report.md").read_text()
    assert "study.best_trials" in md
    front = pd.read_csv(out / "pareto.csv")
    assert set(front["trial"]) == {t.number for t in study.best_trials}
    assert (out / "pareto.png").exists() and (out / "history.png").exists()


def test_too_few_trials_says_so_and_empty_study_works(tmp_path):
    study = make_demo_study(3, study_name="few")
    md = (write_report(study, tmp_path / "few") / "report.md").read_text()
    imp = md_sections(md)["Parameter importances"]
    assert "Fallback" in imp or "Not computed" in imp
    empty = optuna.create_study(study_name="empty")
    md = (write_report(empty, tmp_path / "empty") / "report.md").read_text()
    assert "No trials yet" in md and "No completed trial" in md


def test_status_lists_counts_best_and_interval(demo_db, capsys):
    _, url = demo_db
    study = optuna.load_study(study_name="joint-tiny-synthetic", storage=url)
    assert _main(["status", "--storage", url]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("joint-tiny-synthetic"))
    counts = {s: sum(1 for t in study.trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    nums = [int(x) for x in re.findall(r"(?<![\d.\[])\b(\d+)\b(?![.\d\]])", line)]
    assert len(study.trials) in nums and all(v in nums for v in counts.values())
    assert f"EM {study.best_trial.user_attrs['exact_match']:.4g}" in line and "EM [" in line and "(n=64)" in line


def test_report_and_status_read_the_value_as_exact_match(tmp_path, capsys):
    # A trial's value is the exact match itself (the eval-loss tie-break lives only in the pruner):
    # history and status show the values as stored, with no exact_match attribute to fall back on.
    url = f"sqlite:///{tmp_path}/plain.db"
    study = optuna.create_study(study_name="plain", storage=url, direction="maximize")
    study.set_user_attr("fingerprint", {"objectives": "exact_match"})
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for lr, v in ((1e-3, 0.125), (3e-3, 0.375), (5e-3, 0.25)):
        study.add_trial(optuna.trial.create_trial(value=v, params={"learning_rate": lr}, distributions=dist))
    hist = build_report(study).csvs["history.csv"]
    assert list(hist["value"]) == [0.125, 0.375, 0.25]
    assert list(hist["best_so_far"]) == [0.125, 0.375, 0.375]
    assert _main(["status", "--storage", url]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("plain"))
    assert "EM 0.375" in line


def test_report_unknown_study_is_one_line_error(demo_db):
    from vantage_core.errors import VantageError
    _, url = demo_db
    with pytest.raises(VantageError, match="not found"):
        _main(["report", "nope", "--storage", url])


def test_report_of_2000_trials_is_fast(tmp_path):
    study = make_demo_study(2000, study_name="scale")
    t0 = time.perf_counter()
    write_report(study, tmp_path)
    dt = time.perf_counter() - t0
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 2000
    # bench/report_scale.py measures the real number (docs/benchmarks.md); this guards regressions
    # on a loaded CI machine.
    assert dt < 15, f"report of 2000 trials took {dt:.1f}s"
