"""How long `vantage-sweep report` takes on a study of 2,000 trials.

The trials come from a fast fake objective (reports/demo.py) that stores exactly what a real
trial stores (metrics, metric histories, intermediate values, infeasible/failed trials), run
with random sampling + median pruning. The report is timed twice: on the in-memory study and
on the same trials loaded from SQLite (the study is copied there once and reused).

    python bench/report_scale.py [--trials 2000] [--repeats 3] [--db /tmp/vantage_report_scale.db]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from reports.build import build_report, write_report  # noqa: E402
from reports.demo import make_demo_study  # noqa: E402


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "vantage_report_scale.db"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = time.perf_counter()
    mem = make_demo_study(args.trials, study_name=f"scale-{args.trials}")
    build_s = time.perf_counter() - t
    states = {}
    for tr in mem.trials:
        states[tr.state.name] = states.get(tr.state.name, 0) + 1
    url = f"sqlite:///{args.db}"
    name = f"scale-{args.trials}"
    try:
        sql = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        sql = make_demo_study(args.trials, storage=url, study_name=name)
    with tempfile.TemporaryDirectory() as d:
        rep = build_report(mem)
        mem_s = timed(lambda: write_report(mem, Path(d) / "mem"), args.repeats)
        sql_s = timed(lambda: write_report(optuna.load_study(study_name=name, storage=url), Path(d) / "sql"),
                      args.repeats)
        size = {p.name: p.stat().st_size for p in (Path(d) / "sql").iterdir()}
    print(f"{args.trials} trials ({', '.join(f'{v} {k}' for k, v in sorted(states.items()))}); "
          f"fake objective {build_s:.2f} s")
    print("| storage | trials | report (s, median of %d) |" % args.repeats)
    print("| --- | ---: | ---: |")
    print(f"| in-memory | {args.trials} | {mem_s:.2f} |")
    print(f"| SQLite (load + report) | {args.trials} | {sql_s:.2f} |")
    print("sections (in-memory, one run): " + ", ".join(f"{k} {v:.2f}s" for k, v in rep.timings.items()))
    print(f"report.html {size['report.html'] / 1e3:.0f} kB, report.md {size['report.md'] / 1e3:.0f} kB, "
          f"trials.csv {size['trials.csv'] / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
