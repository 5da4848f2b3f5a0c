"""Parallel trials as separate processes: joblib's process backend (loky), not threads, since
MLX state is per process. Each process opens the storage itself, joins the study from its
stored settings and runs `study.optimize` for its share of the trials.

SQLite must not be written by several processes; callers pass a JournalStorage
(``journal:PATH``) or a server database (PostgreSQL/MySQL)."""

from __future__ import annotations

import logging

from studies.worker import join_study, optimize

log = logging.getLogger("vantage.sweep")


def shares(n_trials: int, n_jobs: int) -> list[int]:
    """Split n_trials over n_jobs processes as evenly as possible (exact total)."""
    return [n_trials // n_jobs + (1 if i < n_trials % n_jobs else 0) for i in range(n_jobs)]


def _run_share(storage_url: str, study_name: str, n_trials: int, timeout: float | None, seed: int | None,
               out: str | None, verbose: bool, quiet: bool = False) -> int:
    import logging as _logging
    import sys

    level = _logging.DEBUG if verbose else _logging.WARNING if quiet else _logging.INFO
    _logging.basicConfig(level=level, stream=sys.stderr,
                         format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    joined = join_study(storage_url, study_name, seed=seed, out=out, parallel=True)
    return optimize(joined, n_trials=n_trials, timeout=timeout)


def run_parallel(storage_url: str, study_name: str, *, n_trials: int, n_jobs: int, timeout: float | None = None,
                 seed: int | None = 0, out: str | None = None, verbose: bool = False,
                 quiet_children: bool = False) -> int:
    """`quiet_children`: the processes log warnings only (the parent's live display shows them)."""
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    parts = [k for k in shares(n_trials, n_jobs) if k > 0]
    log.info("running %d trials in %d processes (%s)", n_trials, len(parts), ", ".join(map(str, parts)))
    try:
        done = Parallel(n_jobs=len(parts), backend="loky")(
            delayed(_run_share)(storage_url, study_name, k, timeout,
                                None if seed is None else seed + 1000 * (i + 1), out, verbose,
                                quiet_children)
            for i, k in enumerate(parts))
    finally:
        get_reusable_executor().shutdown(wait=True)
    return sum(done)
