"""Every command line: each flag has a description, both spellings of a multi-word flag parse
(`--num_train_steps` and `--num-train-steps`, `--n-jobs` and `--n_jobs`), help shows one of
them and the defaults, usage errors are one line, range checks happen in argparse, and
scripts/*.py --help print their own program name."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from runners.trial_worker import build_parser as trial_worker_parser
from studies.cli import COMMANDS, build_parser as sweep_parser
from vantage_core.cli import data as data_cli
from vantage_core.cli import eval as eval_cli
from vantage_core.cli.args import ArgumentParser, other_spelling, walk_parsers
from vantage_core.cli.train import build_parser as train_parser
from vantage_core.errors import VantageError

ROOT = Path(__file__).resolve().parents[1]


def all_parsers():
    tops = [sweep_parser(), train_parser(), data_cli.download_parser(), data_cli.preprocess_parser(),
            data_cli.import_parser(), eval_cli._score_parser(), eval_cli._generate_parser(), trial_worker_parser()]
    out = []
    for top in tops:
        out += walk_parsers(top)
    return out


PARSERS = all_parsers()


def _value(action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    if isinstance(action.default, str):
        return action.default
    if action.type is not None and getattr(action.type, "__name__", "") == "objectives_list":
        return "exact_match"
    if action.dest in ("set", "overrides"):
        return "training.seed=1"
    return "1"


def _required(parser) -> list[str]:
    """Values for the parser's required arguments (positionals and required options)."""
    argv = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if not a.option_strings:
            argv.append(_value(a))
        elif a.required:
            argv += [a.option_strings[0], _value(a)]
    return argv


def test_walks_every_command():
    progs = {p.prog for p in PARSERS}
    for name in COMMANDS:
        assert f"vantage-sweep {name}" in progs
    for prog in ("vantage-train", "vantage-data download", "vantage-data preprocess", "vantage-data import",
                 "vantage-eval", "vantage-eval score", "vantage-sweep"):
        assert prog in progs
    assert len(PARSERS) >= len(COMMANDS) + 8


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_every_flag_has_a_description(parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for choice in a._choices_actions:   # each subcommand's one-line help
                assert choice.help, (parser.prog, choice.dest)
            continue
        if a.help == argparse.SUPPRESS:          # hidden test hooks only
            assert a.dest == "objective_fn", (parser.prog, a.dest)
            continue
        assert a.help and a.help.strip(), f"{parser.prog}: {a.option_strings or a.dest} has no help text"
    assert isinstance(parser, ArgumentParser), parser.prog
    parser.format_help()   # renders (no bad % in help texts)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_both_spellings_parse(parser):
    base = _required(parser)
    checked = 0
    for a in parser._actions:
        longs = [s for s in a.option_strings if other_spelling(s)]
        if not longs or isinstance(a, argparse._HelpAction):
            continue
        first = longs[0]
        for spelling in {first, other_spelling(first)}:
            argv = [spelling] + ([] if a.nargs == 0 else [_value(a)])
            ns = parser.parse_args(base + argv if spelling not in base else base)
            got = getattr(ns, a.dest)
            if a.nargs == 0:
                assert got == (not a.default), (parser.prog, spelling)
            else:
                assert got is not None, (parser.prog, spelling)
            checked += 1
        if a.help == argparse.SUPPRESS:
            continue
        # help shows one spelling only
        text = parser.format_help()
        alt = other_spelling(first)
        assert first in text and f"{alt} " not in text and f"{alt}\n" not in text and f"{alt}," not in text, \
            (parser.prog, first)
    if any(other_spelling(s) for a in parser._actions for s in a.option_strings):
        assert checked


def test_the_guides_spellings_and_the_others():
    p = train_parser()
    for argv in (["--num_train_steps", "5"], ["--num-train-steps", "5"]):
        assert p.parse_args(["--config", "tiny", *argv]).num_train_steps == 5
    for argv in (["--data_dir", "synthetic"], ["--data-dir", "synthetic"]):
        assert p.parse_args(["--config", "tiny", *argv]).data_dir == "synthetic"
    s = sweep_parser()
    for flag in ("--steps-per-trial", "--steps_per_trial"):
        assert s.parse_args(["lr", flag, "7"]).steps_per_trial == 7
    for flag in ("--n-jobs", "--n_jobs"):
        assert s.parse_args(["lr", flag, "3"]).n_jobs == 3
    assert s.parse_args(["promote", "st", "--num-train-steps", "9"]).num_train_steps == 9
    assert s.parse_args(["worker", "--study_name", "x"]).study_name == "x"
    d = data_cli.preprocess_parser()
    assert d.parse_args(["--data-dir", "d", "--output-dir", "o", "--split-by", "example"]).split_by == "example"


@pytest.mark.parametrize("argv,needle", [
    (["lr", "--trials", "0"], "--trials"),
    (["lr", "--n-jobs", "-1"], "--n-jobs"),
    (["lr", "--steps-per-trial", "-3"], "--steps-per-trial"),
    (["lr", "--timeout", "0"], "--timeout"),
    (["lr", "--repeats", "-1"], "--repeats"),
    (["lr", "--sampler", "bogus"], "unknown sampler"),
    (["lr", "--pruner", "bogus"], "unknown pruner"),
    (["lr", "--objectives", "accuracy"], "unknown objective"),
    (["lr", "--objectives", "exact_match,exact_match"], "give each objective once"),
    (["lr", "--max-memory", "lots"], "cannot read memory size"),
    (["dashboard", "--port", "70000"], "--port"),
    (["worker", "--study-name", "s", "--trials", "0"], "--trials"),
    (["promote", "s", "--num_train_steps", "0"], "--num_train_steps"),
])
def test_range_checks_are_argparse_types_and_one_line(argv, needle):
    with pytest.raises(VantageError) as e:
        sweep_parser().parse_args(argv)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_help_shows_defaults():
    text = " ".join(eval_cli._generate_parser().format_help().split())
    assert "(default: 1)" in text and "(default: dev)" in text and "(default: all)" in text
    text = " ".join(data_cli.preprocess_parser().format_help().split())
    assert "(default: database)" in text and "(default: processed_data)" in text


@pytest.mark.parametrize("script,prog", [("train.py", "scripts/train.py"),
                                          ("download_datasets.py", "scripts/download_datasets.py"),
                                          ("preprocess_data.py", "scripts/preprocess_data.py")])
def test_scripts_print_their_own_program_name(script, prog):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"usage: {prog} "), r.stdout[:200]
    assert "vantage-" not in r.stdout.splitlines()[0]
