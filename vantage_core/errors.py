"""Errors that reach the user as one line and exit code 2.

Every CLI entry point catches `VantageError` and prints `error: <message>`; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VantageError(Exception):
    """Base for every user-facing error (bad config, data, storage, ...)."""

    exit_code = 2

    def __str__(self) -> str:  # one line, always
        return " ".join(super().__str__().split())


class ConfigError(VantageError):
    pass


class DataError(VantageError):
    pass


class StorageError(VantageError):
    pass


class SearchSpaceError(VantageError):
    pass


class CheckpointError(VantageError):
    pass


class TrainingDiverged(VantageError):
    """Loss or gradient became NaN/inf; the run stops and is marked failed."""

    def __init__(self, step: int, what: str):
        self.step = step
        self.what = what
        super().__init__(f"training diverged at step {step}: {what} is not finite "
                         "(reduce learning_rate 2-5x, lower max_grad_norm, add router_z_loss_coef)")


class MemoryBudgetError(VantageError):
    """The configuration is predicted not to fit the device."""


def run_cli(fn, argv=None) -> int:
    """Run `fn(argv)`, turning VantageError into a one-line message and exit code 2."""
    import logging
    import sys

    try:
        rc = fn(argv)
        return int(rc or 0)
    except VantageError as e:
        logging.getLogger("vantage").debug("error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
