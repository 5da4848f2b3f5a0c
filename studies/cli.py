"""`vantage-sweep`: run a hyperparameter sweep, or report on / inspect studies.

    vantage-sweep lr --model tiny                 # an LR sweep, SQLite storage in ./
    vantage-sweep joint --model small --storage postgresql://user@127.0.0.1/optuna
    vantage-sweep report STUDY --storage URL --out DIR
    vantage-sweep status --storage URL
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from search_spaces import SPACES, get_space
from vantage_core.errors import VantageError, run_cli

from .storage import DEFAULT_STORAGE, redact

log = logging.getLogger("vantage.sweep")

COMMANDS = ("report", "status", "dashboard")


def _sweep_parser() -> argparse.ArgumentParser:
    spaces = "\n".join(f"  {n:<15} {s.description}" for n, s in SPACES.items())
    p = argparse.ArgumentParser(
        prog="vantage-sweep",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a pruned Optuna sweep of MLX MoE text-to-SQL training trials.",
        epilog=f"sweeps:\n{spaces}\n\nother commands: vantage-sweep report|status|dashboard|worker|promote --help",
    )
    p.add_argument("sweep", choices=list(SPACES), metavar="SWEEP", help="which search space to sweep (below)")
    p.add_argument("--model", default="tiny",
                   help="model config: tiny, small, medium, large (shipped YAML) or a path (default: tiny)")
    p.add_argument("--trials", type=int, default=8, help="number of trials to add in this run (default: 8)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default: {DEFAULT_STORAGE}); postgresql://, mysql+pymysql://, "
                        "or journal:PATH for many local processes")
    p.add_argument("--study-name", default=None,
                   help="study to create or continue (default: <sweep>-<model>-<data>)")
    p.add_argument("--sampler", default="tpe", help="tpe, random, grid, cmaes, qmc or nsga2 (default: tpe)")
    p.add_argument("--pruner", default="median", help="median, hyperband, sha or none (default: median)")
    p.add_argument("--n-jobs", type=int, default=1, help="trials run at once as separate processes (default: 1)")
    p.add_argument("--steps-per-trial", type=int, default=None,
                   help="training steps per trial (default: the config's num_train_steps)")
    p.add_argument("--objectives", default="exact_match",
                   help="comma list of exact_match, peak_memory, tokens_per_sec. More than one makes a "
                        "multi-objective study (NSGA-II), which runs UNPRUNED: Optuna cannot report "
                        "intermediate values for multi-objective trials")
    p.add_argument("--data", default=None,
                   help="training data: synthetic (embedded default) or spider:PATH (default: the config's data.source)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    p.add_argument("--ranges", default=None,
                   help="YAML file overriding parameter ranges, e.g. {learning_rate: {low: 1e-4, high: 1e-2, log: true}}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a base-config key for every trial (repeatable)")
    p.add_argument("--out", default="sweeps", help="folder for trial runs and reports (default: ./sweeps)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints of pruned trials")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="prune, before launch, trials predicted to need more memory than this, e.g. 8GiB "
                        "(default: the machine's memory)")
    p.add_argument("--new-study", action="store_true", help="refuse to continue an existing study of that name")
    p.add_argument("--accept-mismatch", action="store_true",
                   help="continue a study even though its fingerprint (data, base config, code) changed")
    p.add_argument("--runner", choices=("inprocess", "subprocess"), default="inprocess",
                   help="inprocess: trials run in this process (or --n-jobs processes); subprocess: one "
                        "process per trial (isolation from leaks and crashes, per-trial peak memory)")
    p.add_argument("--trial-timeout", type=float, default=None, metavar="SECONDS",
                   help="kill a trial that runs longer than this and mark it FAIL (implies --runner subprocess)")
    p.add_argument("--repeats", type=int, default=0, metavar="K",
                   help="after the sweep, re-train the best configuration with K training seeds and record "
                        "the mean exact match with a 95%% t-interval on the study (default: 0)")
    p.add_argument("--tie-break", choices=("loss", "none"), default="loss",
                   help="exact-match objective: the pruner breaks ties (e.g. all-zero EM of short proxy "
                        "trials) by eval loss, ranking lower loss higher (default: loss); trial values and "
                        "intermediate values are always the plain exact match")
    p.add_argument("--heartbeat-interval", type=int, default=60, metavar="SECONDS",
                   help="RDB storage heartbeat; a RUNNING trial silent for --grace-period is failed and "
                        "retried (default: 60; 0 turns heartbeats off)")
    p.add_argument("--grace-period", type=int, default=180, metavar="SECONDS", help="(default: 180)")
    p.add_argument("--objective-fn", default=None, help=argparse.SUPPRESS)  # test hook: module:function
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vantage-sweep report",
        description="Write a study's report: Markdown, one self-contained HTML file, CSV tables and PNG plots "
                    "(trials, best vs baseline, exact match vs memory and throughput, Pareto front, history, "
                    "intermediate values, parameter importances, feasibility, diagnosis).")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--out", default=None, help="output folder (default: sweeps/<study>/report)")
    return p


def _status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vantage-sweep status",
                                description="List studies with trial counts by state, best value and its 95% interval.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    return p


def _dashboard_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vantage-sweep dashboard",
                                description="Browse studies in optuna-dashboard (trials, user attributes, "
                                            "intermediate values, plots). Ctrl-C stops it.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; the dashboard has no login)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    return p


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def cmd_sweep(args) -> int:
    import yaml

    from vantage_core.config import load_config, parse_overrides

    from .objective import OBJECTIVES, TrialSpec
    from .storage import absolute, is_sqlite, journal_for, open_storage
    from .study import (PRUNERS, SAMPLERS, base_config_without_searched, fingerprint_parts, make_pruner,
                        make_sampler, open_study, save_settings)

    # Validate everything before touching storage, so bad input never changes a study.
    space = get_space(args.sweep)
    if args.sampler not in SAMPLERS:
        raise VantageError(f"unknown sampler '{args.sampler}' (choose from {', '.join(SAMPLERS)})")
    if args.pruner not in PRUNERS:
        raise VantageError(f"unknown pruner '{args.pruner}' (choose from {', '.join(PRUNERS)})")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    for o in objectives:
        if o not in OBJECTIVES:
            raise VantageError(f"unknown objective '{o}' (choose from {', '.join(OBJECTIVES)})")
    if not objectives or len(set(objectives)) != len(objectives):
        raise VantageError(f"--objectives '{args.objectives}': give each objective once")
    if args.trials <= 0:
        raise VantageError(f"--trials must be > 0, got {args.trials}")
    if args.n_jobs <= 0:
        raise VantageError(f"--n-jobs must be > 0, got {args.n_jobs}")
    if args.timeout is not None and args.timeout <= 0:
        raise VantageError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.trial_timeout is not None and args.trial_timeout <= 0:
        raise VantageError(f"--trial-timeout must be > 0 seconds, got {args.trial_timeout:g}")
    if args.steps_per_trial is not None and args.steps_per_trial <= 0:
        raise VantageError(f"--steps-per-trial must be > 0, got {args.steps_per_trial}")
    if args.repeats < 0:
        raise VantageError(f"--repeats must be >= 0, got {args.repeats}")
    from .feasibility import parse_size
    max_memory = parse_size(args.max_memory)
    runner = "subprocess" if args.trial_timeout else args.runner
    storage_url = args.storage
    if args.n_jobs > 1 and is_sqlite(storage_url):
        # SQLite must not be written by several processes at once.
        if args.storage_given:
            raise VantageError(f"--n-jobs {args.n_jobs} with SQLite storage '{redact(storage_url)}': SQLite cannot be "
                               "shared by several processes; use --storage journal:PATH (local) or "
                               "postgresql://... / mysql+pymysql://... (many machines)")
        storage_url = journal_for(storage_url)
        log.info("--n-jobs %d: using JournalStorage %s instead of SQLite", args.n_jobs, storage_url)
    overrides = parse_overrides(args.set)
    if args.data:
        src = args.data
        if src.startswith("spider:"):
            src = "spider:" + str(Path(src.split(":", 1)[1]).expanduser().resolve())
        overrides.setdefault("data", {})["source"] = src
    base = load_config(args.model, overrides)
    ranges = None
    if args.ranges:
        try:
            ranges = yaml.safe_load(Path(args.ranges).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise VantageError(f"{args.ranges}: cannot read ranges ({e})") from None
        if ranges is not None and not isinstance(ranges, dict):
            raise VantageError(f"{args.ranges}: expected a mapping of parameter -> {{low, high, log}}")
    space.ranges(base, ranges)  # invalid spaces fail here, before any trial
    from .feasibility import check_sweep_fits
    check_sweep_fits(space, base, ranges, max_memory, sweep=args.sweep)  # exit 2 before any study
    if args.objective_fn:
        from .objective import load_ref
        load_ref(args.objective_fn)
    model_name = args.model if args.model in ("tiny", "small", "medium", "large") else Path(args.model).stem
    data_name = base.data.source.split(":")[0]
    study_name = args.study_name or f"{args.sweep}-{model_name}-{data_name}"
    out_root = (Path(args.out) / study_name).resolve()
    spec = TrialSpec(space=space, base=base, objectives=objectives, ranges=ranges,
                     steps_per_trial=args.steps_per_trial, runs_dir=out_root / "trials",
                     keep_checkpoints=args.keep_checkpoints, max_memory=max_memory,
                     tie_break=args.tie_break == "loss", objective_fn=args.objective_fn)
    if args.objective_fn:   # debug objective: no training, so no data to load
        desc = {"source": base.data.source, "train_examples": 0, "valid_examples": 0, "eval_examples": 0,
                "valid_dbs": [], "tokenizer": "none (--objective-fn)"}
    else:
        desc = spec.data.describe()  # the validation split is carved from the training data here
    storage = open_storage(storage_url, heartbeat_interval=args.heartbeat_interval or None,
                           grace_period=args.grace_period)
    multi = len(objectives) > 1
    sampler_name = "nsga2" if multi and args.sampler == "tpe" else args.sampler
    sampler = make_sampler(sampler_name, args.seed, space, base, ranges)
    steps = args.steps_per_trial or base.training.num_train_steps
    pruner_name = "none" if multi else args.pruner
    pruner = make_pruner(pruner_name, max_resource=steps)
    fp = fingerprint_parts(space, base, desc, objectives, args.steps_per_trial)
    directions = [OBJECTIVES[o][0] for o in objectives]
    cfg_dict = base_config_without_searched(space, base, args.steps_per_trial)
    study = open_study(storage, study_name, directions, sampler, pruner, fp,
                       new_study=args.new_study, accept_mismatch=args.accept_mismatch, base_config_dict=cfg_dict)
    if multi:
        log.info("multi-objective study (%s): trials run unpruned", ", ".join(objectives))
    if not study.trials:
        # Every study starts with the guide's default configuration as its baseline.
        study.enqueue_trial(space.params_of(base), user_attrs={"baseline": True})
    study.set_user_attr("model", args.model)
    study.set_user_attr("sweep", args.sweep)
    study.set_user_attr("data", desc)
    # What a worker (another process or machine) needs to run trials of this study.
    save_settings(study, {
        "sweep": args.sweep, "model": args.model, "config_yaml": base.to_yaml(), "base_config": cfg_dict,
        "ranges": ranges, "steps_per_trial": args.steps_per_trial, "data_source": base.data.source,
        "objectives": objectives, "sampler": sampler_name, "pruner": pruner_name, "seed": args.seed,
        "runs_dir": str(out_root / "trials"), "keep_checkpoints": args.keep_checkpoints,
        "tie_break": spec.tie_break, "objective_fn": args.objective_fn, "max_memory": max_memory,
        "heartbeat_interval": args.heartbeat_interval, "grace_period": args.grace_period,
    })
    log.info("study %s in %s: %d trials so far, adding %d (%s runner%s)", study_name, redact(storage_url),
             len(study.trials), args.trials, runner, f", {args.n_jobs} at a time" if args.n_jobs > 1 else "")
    if runner == "subprocess":
        from runners.subprocess import run_subprocess
        run_subprocess(study, absolute(storage_url), n_trials=args.trials, timeout=args.timeout,
                       trial_timeout=args.trial_timeout, n_jobs=args.n_jobs, seed=args.seed, verbose=args.verbose)
    elif args.n_jobs > 1:
        from runners.parallel import run_parallel
        run_parallel(absolute(storage_url), study_name, n_trials=args.trials, n_jobs=args.n_jobs,
                     timeout=args.timeout, seed=args.seed, verbose=args.verbose)
    else:
        from runners.inprocess import run_inprocess
        run_inprocess(study, spec, n_trials=args.trials, timeout=args.timeout)
    study = optuna_reload(study, storage)
    if args.repeats and not multi:
        from .promote import run_repeats
        run_repeats(study, spec, repeats=args.repeats)
    from reports.trials import write_trials_report
    report_dir = write_trials_report(study, out_root / "report")
    counts = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    print(f"study {study_name}: {len(study.trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if not multi:
        try:
            b = study.best_trial
            ci = b.user_attrs.get("exact_match_ci")
            ci_s = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
            print(f"best: trial {b.number} exact_match={b.user_attrs.get('exact_match', b.value):.3f}{ci_s} "
                  f"params={b.params}")
        except ValueError:
            print("best: no completed trial yet")
    print(f"report: {report_dir}/report.md")
    return 0


def optuna_reload(study, storage):
    import optuna
    return optuna.load_study(study_name=study.study_name, storage=storage, sampler=study.sampler,
                             pruner=study.pruner)


def _load_study(args):
    import optuna

    from .storage import open_storage
    storage = open_storage(args.storage, heartbeat_interval=None)
    try:
        return optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        raise VantageError(f"study '{args.study}' not found in {redact(args.storage)}") from None


def cmd_report(args) -> int:
    from reports.build import write_report

    study = _load_study(args)
    out = write_report(study, args.out or Path("sweeps") / args.study / "report", storage_url=redact(args.storage))
    print(f"report: {out}/report.md")
    print(f"        {out}/report.html")
    return 0


def cmd_status(args) -> int:
    from reports.status import format_status, status_frame

    from .storage import open_storage
    storage = open_storage(args.storage, heartbeat_interval=None)
    df = status_frame(storage)
    if df.empty:
        print(f"no studies in {redact(args.storage)}")
    else:
        print(f"studies in {redact(args.storage)}:")
        print(format_status(df))
    return 0


def cmd_dashboard(args) -> int:
    from .dashboard import serve
    return serve(args.storage, host=args.host, port=args.port)


def _main(argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MY_COMMANDS:   # worker, promote (studies/worker.py, studies/promote.py)
        return _run_my_command(argv[0], argv[1:])
    if argv and argv[0] in COMMANDS:
        cmd, rest = argv[0], argv[1:]
        parser = {"report": _report_parser, "status": _status_parser, "dashboard": _dashboard_parser}[cmd]()
        args = parser.parse_args(rest)
        setup_logging()
        return {"report": cmd_report, "status": cmd_status, "dashboard": cmd_dashboard}[cmd](args)
    parser = _sweep_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in SPACES:
        raise VantageError(f"unknown sweep '{argv[0]}' (choose from {', '.join(SPACES)}, or report, status, dashboard)")
    args = parser.parse_args(argv)
    args.storage_given = any(a == "--storage" or a.startswith("--storage=") for a in argv)
    setup_logging(args.verbose)
    return cmd_sweep(args)


MY_COMMANDS = ("worker", "promote")


def _run_my_command(cmd: str, rest: list[str]) -> int:
    if cmd == "worker":
        from .worker import cmd_worker, worker_parser
        args = worker_parser().parse_args(rest)
        setup_logging(args.verbose)
        return cmd_worker(args)
    from .promote import cmd_promote, promote_parser
    args = promote_parser().parse_args(rest)
    setup_logging(args.verbose)
    return cmd_promote(args)


def main(argv=None) -> int:
    sys.exit(run_cli(_main, argv))
