"""Child process of the subprocess runner: runs ONE trial of a study.

    VANTAGE_TRIAL_STORAGE=URL python -m runners.trial_worker --study-name S --trial-number N

The parent asked the trial (`study.ask()`, so it is RUNNING under trial number N); this
process builds the objective from the study's stored settings, runs it, and tells the
result. If this process dies, the parent marks the trial FAIL with the reason (and a
restarted sweep or the heartbeat does, if the parent died too)."""

from __future__ import annotations

import logging
import os
import resource
import sys

from studies.objective import TrialFailed, make_objective
from studies.worker import join_study
from vantage_core.cli.args import ArgumentParser
from vantage_core.errors import run_cli


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.trial_worker",
                       description="Run ONE trial of a study (a child of the subprocess runner).")
    p.add_argument("--storage", default=os.environ.get("VANTAGE_TRIAL_STORAGE"),
                   help="storage URL (default: $VANTAGE_TRIAL_STORAGE, set by the subprocess runner)")
    p.add_argument("--study-name", required=True, help="the study the trial belongs to")
    p.add_argument("--trial-number", type=int, required=True, help="the RUNNING trial (asked by the parent) to run")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (the parent passes seed + trial number)")
    p.add_argument("--out", default=None, help="folder for the trial's run (default: the study's)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only (the parent shows live progress)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.storage:
        p.error("--storage (or VANTAGE_TRIAL_STORAGE) is required")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

    joined = join_study(args.storage, args.study_name, seed=args.seed, out=args.out, check_data=False)
    study, spec = joined.study, joined.spec
    storage = study._storage
    # Reading the trials fills the storage cache that Trial's writes go through.
    mine = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial_number]
    if not mine:
        print(f"error: study '{args.study_name}' has no trial {args.trial_number}", file=sys.stderr)
        return 2
    trial_id = mine[0]._trial_id
    if mine[0].state != TrialState.RUNNING:
        print(f"error: trial {args.trial_number} is {mine[0].state.name}, not RUNNING", file=sys.stderr)
        return 2
    trial = optuna.trial.Trial(study, trial_id)
    objective = make_objective(spec)
    state, values = TrialState.FAIL, None
    with get_heartbeat_thread(trial_id, storage):
        try:
            values = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed as e:
            trial.set_user_attr("failure_reason", trial.user_attrs.get("failure_reason") or str(e))
        except Exception as e:  # a bug or a crash in the trial: FAIL with the reason, exit 1
            trial.set_user_attr("failure_reason", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500])
            trial.set_user_attr("process_peak_rss_bytes", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("process_peak_rss_bytes", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if state == TrialState.COMPLETE:
        study.tell(trial, values)
    else:
        study.tell(trial, state=state)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
