"""`vantage-sweep`: run a hyperparameter sweep, or report on / inspect studies.

    vantage-sweep lr --model tiny                 # an LR sweep, SQLite storage in ./
    vantage-sweep joint --model small --storage postgresql://user@127.0.0.1/optuna
    vantage-sweep report STUDY --storage URL --out DIR
    vantage-sweep status --storage URL

The subcommands are a registry (as optuna/cli.py's): one `Command` per sweep (search space)
and per tool (report, status, dashboard, worker, promote), each adding its own arguments to
its subparser. Range checks are argparse ``type=`` functions, so a bad value is one line
(`error: ...`, exit code 2) before anything is opened.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from search_spaces import SPACES, SearchSpace, get_space
from vantage_core.cli.args import (SPELLING_NOTE, ArgumentParser, HelpFormatter, nonnegative_int, one_of,
                                   port, positive_float, positive_int)
from vantage_core.config import load_config, parse_overrides
from vantage_core.data.readers import parse_source
from vantage_core.errors import VantageError, run_cli

from runners.inprocess import run_inprocess
from runners.parallel import run_parallel
from runners.subprocess import run_subprocess

from . import promote as _promote
from . import worker as _worker
from .dashboard import serve
from .feasibility import check_sweep_fits, parse_size
from .objective import OBJECTIVES, TrialSpec, load_ref
from .progress import SweepMonitor, wants_display
from .settings import SweepSettings
from .storage import DEFAULT_STORAGE, absolute, is_sqlite, journal_for, open_storage, redact
from .study import (PRUNERS, SAMPLERS, base_config_without_searched, fingerprint_parts, load_existing,
                    make_pruner, make_sampler, open_study)

log = logging.getLogger("vantage.sweep")

STORAGE_HELP = f"Optuna storage URL (default: {DEFAULT_STORAGE})"
MULTI_NOTE = ("More than one objective (--objectives exact_match,peak_memory,...) makes a multi-objective "
              "study (NSGA-II), which runs UNPRUNED: Optuna cannot report intermediate values for "
              "multi-objective trials.")


# ------------------------------------------------------------------ argparse type= checks

def objectives_list(text: str) -> list[str]:
    names = [o.strip() for o in text.split(",") if o.strip()]
    for o in names:
        if o not in OBJECTIVES:
            raise argparse.ArgumentTypeError(f"unknown objective '{o}' (choose from {', '.join(OBJECTIVES)})")
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"'{text}': give each objective once")
    return names


def memory_size(text: str) -> int:
    try:
        return parse_size(text)
    except VantageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seconds(text: str) -> float:
    return positive_float(text)


def heartbeat_seconds(text: str) -> int:
    return nonnegative_int(text)


# ------------------------------------------------------------------ the registry

class Command:
    """One `vantage-sweep` subcommand: its help, its arguments, its action."""

    name = ""
    help = ""
    description = ""
    epilog = None

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        pass

    def take_action(self, args) -> int:
        raise NotImplementedError


def add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"{STORAGE_HELP}; postgresql://, mysql+pymysql://, or journal:PATH for many local processes")


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


class SweepCommand(Command):
    def __init__(self, space: SearchSpace):
        self.space = space
        self.name = space.name
        self.help = space.description
        self.description = (f"Run a pruned Optuna sweep of MLX MoE text-to-SQL training trials: {space.description}.")
        self.epilog = MULTI_NOTE + "\n" + SPELLING_NOTE

    def add_arguments(self, p):
        p.add_argument("--model", default="tiny",
                       help="model config: tiny, small, medium, large (shipped YAML) or a path (default: tiny)")
        p.add_argument("--trials", type=positive_int, default=8, help="number of trials to add in this run (default: 8)")
        p.add_argument("--timeout", type=seconds, default=None, help="stop starting new trials after this many seconds")
        add_storage(p)
        p.add_argument("--study-name", default=None,
                       help="study to create or continue (default: <sweep>-<model>-<data>)")
        p.add_argument("--sampler", type=one_of(SAMPLERS, "sampler"), default="tpe",
                       help=f"{', '.join(SAMPLERS)} (default: tpe)")
        p.add_argument("--pruner", type=one_of(PRUNERS, "pruner"), default="median",
                       help=f"{', '.join(PRUNERS)} (default: median)")
        p.add_argument("--n-jobs", type=positive_int, default=1, help="trials run at once as separate processes (default: 1)")
        p.add_argument("--steps-per-trial", type=positive_int, default=None,
                       help="training steps per trial (default: the config's num_train_steps)")
        p.add_argument("--objectives", type=objectives_list, default=["exact_match"],
                       help="comma list of exact_match, peak_memory, tokens_per_sec. More than one makes a "
                            "multi-objective study (NSGA-II), which runs UNPRUNED: Optuna cannot report "
                            "intermediate values for multi-objective trials (default: exact_match)")
        p.add_argument("--data", default=None,
                       help="training data: synthetic (embedded default) or spider:PATH (default: the config's data.source)")
        p.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
        p.add_argument("--ranges", default=None,
                       help="YAML file overriding parameter ranges, e.g. {learning_rate: {low: 1e-4, high: 1e-2, log: true}}")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a base-config key for every trial (repeatable)")
        p.add_argument("--out", default="sweeps", help="folder for trial runs and reports (default: ./sweeps)")
        p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints of pruned trials")
        p.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                       help="prune, before launch, trials predicted to need more memory than this, e.g. 8GiB "
                            "(default: the machine's memory)")
        p.add_argument("--new-study", action="store_true", help="refuse to continue an existing study of that name")
        p.add_argument("--accept-mismatch", action="store_true",
                       help="continue a study even though its fingerprint (data, base config, code) changed")
        p.add_argument("--runner", choices=("inprocess", "subprocess"), default="inprocess",
                       help="inprocess: trials run in this process (or --n-jobs processes); subprocess: one "
                            "process per trial (isolation from leaks and crashes, per-trial peak memory)")
        p.add_argument("--trial-timeout", type=seconds, default=None, metavar="SECONDS",
                       help="kill a trial that runs longer than this and mark it FAIL (implies --runner subprocess)")
        p.add_argument("--repeats", type=nonnegative_int, default=0, metavar="K",
                       help="after the sweep, re-train the best configuration with K training seeds and record "
                            "the mean exact match with a 95%% t-interval on the study (default: 0)")
        p.add_argument("--tie-break", choices=("loss", "none"), default="loss",
                       help="exact-match objective: the pruner breaks ties (e.g. all-zero EM of short proxy "
                            "trials) by eval loss, ranking lower loss higher (default: loss); trial values and "
                            "intermediate values are always the plain exact match")
        p.add_argument("--heartbeat-interval", type=heartbeat_seconds, default=60, metavar="SECONDS",
                       help="RDB storage heartbeat; a RUNNING trial silent for --grace-period is failed and "
                            "retried (default: 60; 0 turns heartbeats off)")
        p.add_argument("--grace-period", type=nonnegative_int, default=180, metavar="SECONDS",
                       help="seconds without a heartbeat after which a RUNNING trial counts as dead (default: 180)")
        p.add_argument("--quiet", "-q", action="store_true",
                       help="no live progress display (log lines only; also the default when stdout is not a terminal)")
        p.add_argument("--objective-fn", default=None, help=argparse.SUPPRESS)  # test hook: module:function
        add_verbose(p)

    def take_action(self, args) -> int:
        return cmd_sweep(args)


class ReportCommand(Command):
    name = "report"
    help = "write a study's report (Markdown, HTML, CSV, PNG)"
    description = ("Write a study's report: Markdown, one self-contained HTML file, CSV tables and PNG plots "
                   "(trials, best vs baseline, exact match vs memory and throughput, Pareto front, history, "
                   "intermediate values, parameter importances, feasibility, diagnosis).")

    def add_arguments(self, p):
        p.add_argument("study", help="study name")
        p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)
        p.add_argument("--out", default=None, help="output folder (default: sweeps/<study>/report)")

    def take_action(self, args) -> int:
        return cmd_report(args)


class StatusCommand(Command):
    name = "status"
    help = "list studies with trial counts and best values"
    description = "List studies with trial counts by state, best value and its 95% interval."

    def add_arguments(self, p):
        p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)

    def take_action(self, args) -> int:
        return cmd_status(args)


class DashboardCommand(Command):
    name = "dashboard"
    help = "browse studies in optuna-dashboard"
    description = ("Browse studies in optuna-dashboard (trials, user attributes, intermediate values, plots). "
                   "Ctrl-C stops it.")

    def add_arguments(self, p):
        p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)
        p.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1, this machine only; the dashboard has no login)")
        p.add_argument("--port", type=port, default=8080, help="port (default: 8080; 0 picks a free one)")

    def take_action(self, args) -> int:
        return serve(args.storage, host=args.host, port=args.port)


class WorkerCommand(Command):
    name = "worker"
    help = "join an existing study and run its trials (any machine that reaches the storage)"
    description = _worker.WORKER_DESCRIPTION

    def add_arguments(self, p):
        _worker.add_worker_arguments(p)

    def take_action(self, args) -> int:
        return _worker.cmd_worker(args)


class PromoteCommand(Command):
    name = "promote"
    help = "train a trial's configuration for the full budget and evaluate it once on dev"
    description = _promote.PROMOTE_DESCRIPTION

    def add_arguments(self, p):
        _promote.add_promote_arguments(p)

    def take_action(self, args) -> int:
        return _promote.cmd_promote(args)


COMMANDS: dict[str, Command] = {
    **{name: SweepCommand(space) for name, space in SPACES.items()},
    **{c.name: c for c in (ReportCommand(), StatusCommand(), DashboardCommand(), WorkerCommand(),
                           PromoteCommand())},
}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="vantage-sweep",
        description="Run a pruned Optuna sweep of MLX MoE text-to-SQL training trials, or inspect studies.",
        epilog=f"{MULTI_NOTE}\n\n`vantage-sweep COMMAND --help` shows a command's options. "
               + SPELLING_NOTE)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands (a sweep's name, or a tool)")
    for name, cmd in COMMANDS.items():
        sp = sub.add_parser(name, help=cmd.help.replace("%", "%%"), description=cmd.description, epilog=cmd.epilog,
                            formatter_class=HelpFormatter)
        cmd.add_arguments(sp)
        sp.set_defaults(handler=cmd)
    return p


def command_parser(name: str) -> ArgumentParser:
    """One command's parser on its own (its prog is `vantage-sweep NAME`)."""
    cmd = COMMANDS[name]
    p = ArgumentParser(prog=f"vantage-sweep {name}", description=cmd.description, epilog=cmd.epilog)
    cmd.add_arguments(p)
    p.set_defaults(handler=cmd, command=name)
    return p


def _dashboard_parser() -> ArgumentParser:
    return command_parser("dashboard")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------ the sweep

def cmd_sweep(args) -> int:
    # Argument ranges were checked by argparse; everything else is validated before touching
    # storage, so bad input never changes a study.
    space = get_space(args.command)
    objectives = list(args.objectives)
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
        kind, path = parse_source(args.data)
        overrides.setdefault("data", {})["source"] = f"spider:{path.resolve()}" if kind == "spider" else args.data
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
    check_sweep_fits(space, base, ranges, args.max_memory, sweep=space.name)  # exit 2 before any study
    if args.objective_fn:
        load_ref(args.objective_fn)
    model_name = args.model if args.model in ("tiny", "small", "medium", "large") else Path(args.model).stem
    data_name = base.data.source.split(":")[0]
    study_name = args.study_name or f"{space.name}-{model_name}-{data_name}"
    out_root = (Path(args.out) / study_name).resolve()
    spec = TrialSpec(space=space, base=base, objectives=objectives, ranges=ranges,
                     steps_per_trial=args.steps_per_trial, runs_dir=out_root / "trials",
                     keep_checkpoints=args.keep_checkpoints, max_memory=args.max_memory,
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
                       new_study=args.new_study, accept_mismatch=args.accept_mismatch, base_config_dict=cfg_dict,
                       metric_names=objectives)
    if multi:
        log.info("multi-objective study (%s): trials run unpruned", ", ".join(objectives))
    if not study.trials:
        # Every study starts with the guide's default configuration as its baseline.
        study.enqueue_trial(space.params_of(base), user_attrs={"baseline": True})
    study.set_user_attr("model", args.model)
    study.set_user_attr("sweep", space.name)
    study.set_user_attr("data", desc)
    # What a worker (another process or machine) needs to run trials of this study.
    SweepSettings(
        sweep=space.name, model=args.model, config_yaml=base.to_yaml(), base_config=cfg_dict, ranges=ranges,
        steps_per_trial=args.steps_per_trial, data_source=base.data.source, objectives=objectives,
        sampler=sampler_name, pruner=pruner_name, seed=args.seed, runs_dir=str(out_root / "trials"),
        keep_checkpoints=args.keep_checkpoints, tie_break=spec.tie_break, objective_fn=args.objective_fn,
        max_memory=args.max_memory, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
    ).save(study)
    log.info("study %s in %s: %d trials so far, adding %d (%s runner%s)", study_name, redact(storage_url),
             len(study.trials), args.trials, runner, f", {args.n_jobs} at a time" if args.n_jobs > 1 else "")
    monitor = SweepMonitor(study, objectives=objectives, n_trials=args.trials, steps=steps, timeout=args.timeout,
                           enabled=wants_display(args.quiet))
    with monitor:
        if runner == "subprocess":
            run_subprocess(study, absolute(storage_url), n_trials=args.trials, timeout=args.timeout,
                           trial_timeout=args.trial_timeout, n_jobs=args.n_jobs, seed=args.seed,
                           verbose=args.verbose, quiet_children=monitor.enabled)
        elif args.n_jobs > 1:
            run_parallel(absolute(storage_url), study_name, n_trials=args.trials, n_jobs=args.n_jobs,
                         timeout=args.timeout, seed=args.seed, verbose=args.verbose, quiet_children=monitor.enabled)
        else:
            run_inprocess(study, spec, n_trials=args.trials, timeout=args.timeout)
    study = optuna_reload(study, storage)
    if args.repeats and not multi:
        _promote.run_repeats(study, spec, repeats=args.repeats)
    from reports.trials import write_trials_report   # reports (pandas, matplotlib): only when needed
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
    storage = open_storage(args.storage, heartbeat_interval=None)
    return load_existing(storage, args.study, args.storage)


def cmd_report(args) -> int:
    from reports.build import write_report

    study = _load_study(args)
    out = write_report(study, args.out or Path("sweeps") / args.study / "report", storage_url=redact(args.storage))
    print(f"report: {out}/report.md")
    print(f"        {out}/report.html")
    return 0


def cmd_status(args) -> int:
    from reports.status import format_status, status_frame

    storage = open_storage(args.storage, heartbeat_interval=None)
    df = status_frame(storage)
    if df.empty:
        print(f"no studies in {redact(args.storage)}")
    else:
        print(f"studies in {redact(args.storage)}:")
        print(format_status(df))
    return 0


def cmd_dashboard(args) -> int:
    return COMMANDS["dashboard"].take_action(args)


def _main(argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        tools = [n for n in COMMANDS if n not in SPACES]
        raise VantageError(f"unknown sweep '{argv[0]}' (choose from {', '.join(SPACES)}, or {', '.join(tools)})")
    args = build_parser().parse_args(argv)
    if args.command is None:
        raise VantageError(f"vantage-sweep: give a sweep ({', '.join(SPACES)}) or a command; see vantage-sweep --help")
    if isinstance(args.handler, SweepCommand):
        args.storage_given = any(a in ("--storage",) or a.startswith("--storage=") for a in argv)
    setup_logging(getattr(args, "verbose", False))
    return args.handler.take_action(args)


def main(argv=None) -> int:
    sys.exit(run_cli(_main, argv))
