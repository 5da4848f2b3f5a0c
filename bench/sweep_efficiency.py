"""Sweep efficiency: the same sampler seed with and without pruning, on the tiny config.

For each sampler seed, an LR sweep of N real tiny trials runs twice, once with the median
pruner and once with none; it reports the trial-steps used (the sum over trials of the
training steps each ran: a pruned trial counts up to the step it was stopped at) and the best
trial's exact match with its 95% Wilson interval over the eval examples.

    python bench/sweep_efficiency.py --trials 6 --steps 20 --seeds 0 1 2 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from search_spaces import get_space  # noqa: E402
from studies.objective import TrialFailed, TrialSpec, make_objective  # noqa: E402
from studies.study import make_pruner, make_sampler  # noqa: E402
from vantage_core.config import load_config  # noqa: E402

SECTION = "## Sweep efficiency"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_one(spec: TrialSpec, seed: int, pruner: str, n_trials: int) -> dict:
    sampler = make_sampler("tpe", seed, spec.space, spec.base, spec.ranges)
    study = optuna.create_study(direction="maximize", sampler=sampler,
                                pruner=make_pruner(pruner, max_resource=spec.steps_per_trial))
    study.enqueue_trial(spec.space.params_of(spec.base), user_attrs={"baseline": True})
    t0 = time.perf_counter()
    study.optimize(make_objective(spec), n_trials=n_trials, catch=(TrialFailed,), gc_after_trial=True)
    wall = time.perf_counter() - t0
    steps = sum(int(t.user_attrs.get("steps", 0)) for t in study.trials)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value) if done else None
    return {"seed": seed, "pruner": pruner, "trials": len(study.trials),
            "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
            "failed": sum(t.state.name == "FAIL" for t in study.trials),
            "trial_steps": steps, "wall_s": wall,
            "best_trial": best.number if best else None,
            "best_lr": best.params["learning_rate"] if best else None,
            "best_em": best.user_attrs["exact_match"] if best else None,
            "best_ci": best.user_attrs["exact_match_ci"] if best else None,
            "best_eval_loss": best.user_attrs.get("eval_loss") if best else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--steps", type=int, default=20, help="training steps per trial")
    p.add_argument("--eval-steps", type=int, default=5)
    p.add_argument("--eval-examples", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--write", default=None, help="replace/append the section in this Markdown file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    base = load_config("tiny", {"training": {"eval_steps": args.eval_steps},
                                "data": {"max_eval_examples": args.eval_examples},
                                "eval": {"max_new_tokens": args.max_new_tokens}})
    spec = TrialSpec(space=get_space("lr"), base=base, objectives=["exact_match"], steps_per_trial=args.steps)
    spec.data  # prepared once, shared by every run
    rows = []
    t_all = time.perf_counter()
    for seed in args.seeds:
        for pruner in ("median", "none"):
            r = run_one(spec, seed, pruner, args.trials)
            rows.append(r)
            print(f"seed {seed} pruner {pruner:<6} trial-steps {r['trial_steps']:>4} pruned {r['pruned']} "
                  f"best EM {r['best_em']} CI {r['best_ci']} wall {r['wall_s']:.0f}s", flush=True)
    total = time.perf_counter() - t_all

    def ci(r):
        return f"{r['best_em']:.3f} [{r['best_ci'][0]:.3f}, {r['best_ci'][1]:.3f}]" if r["best_ci"] else "-"

    lines = [SECTION, "",
             f"The same TPE sampler seed with the median pruner and without pruning: an LR sweep of the tiny "
             f"config on the synthetic data, {args.trials} trials of {args.steps} steps (evaluation every "
             f"{args.eval_steps} steps on {args.eval_examples} validation examples, greedy decoding up to "
             f"{args.max_new_tokens} tokens), the baseline enqueued first. Trial-steps: training steps summed "
             "over trials (a pruned trial counts up to the step it was stopped at). Best EM: the best trial's "
             "exact match with its 95% Wilson interval over the eval examples; loss: its eval loss (the "
             "tie-break when exact match is equal).", "",
             f"Command: `python bench/sweep_efficiency.py --trials {args.trials} --steps {args.steps} "
             f"--eval-steps {args.eval_steps} --seeds {' '.join(map(str, args.seeds))} --write docs/benchmarks.md`.",
             f"Machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} CPU cores shared with "
             f"other jobs, Python {platform.python_version()}, Optuna {optuna.__version__}; total {total / 60:.1f} min.",
             "", "| seed | pruner | trials | pruned | trial-steps | wall s | best trial | best EM [95% CI] | eval loss |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        loss = f"{r['best_eval_loss']:.3f}" if r["best_eval_loss"] is not None else "-"
        lines.append(f"| {r['seed']} | {r['pruner']} | {r['trials']} | {r['pruned']} | {r['trial_steps']} | "
                     f"{r['wall_s']:.0f} | {r['best_trial']} | {ci(r)} | {loss} |")
    by = {p: [r for r in rows if r["pruner"] == p] for p in ("median", "none")}
    s_med = sum(r["trial_steps"] for r in by["median"])
    s_none = sum(r["trial_steps"] for r in by["none"])
    same = sum(1 for a, b in zip(by["median"], by["none"]) if a["best_trial"] == b["best_trial"])
    lines += ["", f"Totals: {s_med} trial-steps with pruning vs {s_none} without "
                  f"({100 * (1 - s_med / max(1, s_none)):.0f}% saved); the same best trial was found in {same} of "
                  f"{len(args.seeds)} seeds. Exact-match intervals over {args.eval_examples} examples are wide: "
                  "differences between these best trials are within noise.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        path = Path(args.write)
        old = path.read_text() if path.exists() else ""
        if SECTION in old:
            head, rest = old.split(SECTION, 1)
            nxt = rest.find("\n## ")
            old = head + (rest[nxt + 1:] if nxt >= 0 else "")
            old = old.rstrip("\n") + "\n\n" if old.strip() else ""
        else:
            old = old.rstrip("\n") + "\n\n" if old.strip() else ""
        path.write_text(old + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
