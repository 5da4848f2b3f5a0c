"""What every Vantage command line shares: both flag spellings, one-line usage errors, shown
defaults, range checks as argparse ``type=`` functions, and the W&B pre-flight check.

* Every multi-word flag parses in both spellings: ``--num_train_steps`` and
  ``--num-train-steps``, ``--n-jobs`` and ``--n_jobs``. Help shows one spelling, the one the
  parser declares (the training guide's, underscores, for the guide's flags).
* Usage errors are one-line `VantageError`s (``error: ...``, exit code 2 through `run_cli`).
* Help shows each flag's default (``(default: X)``) unless its text already says it.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, VantageError

SPELLING_NOTE = "Every multi-word flag is also accepted with '-' for '_' and the other way round."


def other_spelling(option: str) -> str | None:
    """'--n-jobs' -> '--n_jobs' and back; None for single-word or short options."""
    if not option.startswith("--"):
        return None
    body = option[2:]
    if "-" in body:
        return "--" + body.replace("-", "_")
    if "_" in body:
        return "--" + body.replace("_", "-")
    return None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """One spelling per flag in help, and the default where the help text does not say it."""

    def _format_action_invocation(self, action):
        if action.option_strings:
            seen, shown = set(), []
            for s in action.option_strings:
                key = s.replace("_", "-")
                if key not in seen:
                    seen.add(key)
                    shown.append(s)
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if ("default" in text or d is None or d is False or d == [] or d is argparse.SUPPRESS
                or not action.option_strings or action.nargs == 0):
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with both flag spellings, shown defaults and one-line usage errors."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise VantageError(f"{self.prog}: {message}")

    def add_argument(self, *names, **kwargs):
        """Also registers each multi-word flag's other spelling (shown in errors, not in help)."""
        extra = [o for o in map(other_spelling, names) if o and o not in names]
        extra = [o for o in extra if o not in self._option_string_actions]
        return super().add_argument(*names, *extra, **kwargs)


def walk_parsers(parser: argparse.ArgumentParser):
    """The parser and every subcommand parser below it (each once)."""
    seen = []
    stack = [parser]
    while stack:
        p = stack.pop()
        if any(p is q for q in seen):
            continue
        seen.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
    return seen


# ------------------------------------------------------------------ range checks (type=)

def _number(kind: Callable, text: str, what: str):
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return v


def _checked(name: str, kind: Callable, what: str, ok: Callable, rule: str, fmt: str = "") -> Callable[[str], Any]:
    """An argparse `type=`: parse `text` as `kind`, then require `ok(value)` ("must be RULE, got V")."""
    def check(text: str):
        v = _number(kind, text, what)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {v:{fmt}}")
        return v
    check.__name__ = name
    return check


positive_int = _checked("positive_int", int, "an integer", lambda v: v > 0, "> 0")
nonnegative_int = _checked("nonnegative_int", int, "an integer", lambda v: v >= 0, ">= 0")
positive_float = _checked("positive_float", float, "a number", lambda v: v > 0, "> 0", "g")
port = _checked("port", int, "a port number", lambda v: 0 <= v <= 65535, "0-65535 (0 picks a free port)")


def one_of(choices, what: str) -> Callable[[str], str]:
    """A type= function accepting one of `choices`, with an 'unknown WHAT' message."""
    choices = tuple(choices)

    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} '{text}' (choose from {', '.join(choices)})")
        return text

    check.__name__ = what.replace(" ", "_")
    return check


# ------------------------------------------------------------------ W&B pre-flight

WANDB_FIX = ("run `wandb login` (or set WANDB_API_KEY), or set WANDB_MODE=offline to log locally "
             "(WANDB_MODE=disabled turns W&B off)")


def _wandb_logged_in(wandb) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        if wandb.api.api_key:   # env, settings file or netrc, as wandb.init reads them
            return True
    except Exception:  # another wandb version: look at the netrc ourselves
        pass
    try:
        import netrc
        from urllib.parse import urlparse
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
        auth = netrc.netrc(os.environ.get("NETRC") or Path.home() / ".netrc").authenticators(host)
        return bool(auth and auth[2])
    except (OSError, netrc.NetrcParseError):
        return False


def check_wandb(flag: str = "--wandb_project") -> None:
    """Before any work: W&B is installed, and logged in or WANDB_MODE is offline/disabled.
    Otherwise one ConfigError line with the fix (exit code 2)."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(f"{flag} needs wandb, which is not installed: pip install 'vantage[wandb]' "
                          "(or drop the flag)") from None
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return
    if not _wandb_logged_in(wandb):
        raise ConfigError(f"{flag}: W&B is not logged in; {WANDB_FIX}")
