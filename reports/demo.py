"""A fast fake objective that stores what `studies.objective.run_trial` stores, for report
tests and the report benchmark (no training: a smooth response surface plus noise).

Trials carry the real user attributes (exact_match, valid_sql, eval_loss, peak_memory_bytes,
tokens_per_sec, wall_time_s, dropped_fraction, steps, eval_examples, eval_history,
train_history, pruned_at_step, failure_reason, infeasible_reason, predicted_peak_memory_bytes,
config, baseline) and report the periodic exact match to the pruner. Some configurations are
infeasible (pruned before launch), some diverge (FAIL), some collapse their experts, overfit,
underfit or spike, so every report section and every diagnosis has something to show.
"""

from __future__ import annotations

import math
import random

import optuna

BASE_PARAMS = {"learning_rate": 3e-3, "warmup_steps": 4, "router_aux_loss_coef": 0.01, "expert_capacity": 1.25}
STEPS, EVAL_EVERY, LOG_EVERY, EVAL_N = 100, 20, 10, 64
MEMORY_LIMIT = 260 * 2**20


class FakeDiverged(Exception):
    pass


def fake_objective(trial: optuna.Trial, rng: random.Random | None = None, *, multi: bool = False):
    rng = rng or random.Random(trial.number)
    lr = trial.suggest_float("learning_rate", 3e-4, 5e-2, log=True)
    warm = trial.suggest_int("warmup_steps", 0, 8)
    aux = trial.suggest_float("router_aux_loss_coef", 1e-3, 5e-2, log=True)
    cap = trial.suggest_float("expert_capacity", 1.0, 2.0)
    trial.set_user_attr("config", f"training:\n  learning_rate: {lr}\n  warmup_steps: {warm}\n"
                                  f"model:\n  router_aux_loss_coef: {aux}\n  expert_capacity: {cap}\n")
    predicted = int((150 + 140 * (cap - 1.0)) * 2**20)
    trial.set_user_attr("predicted_peak_memory_bytes", predicted)
    if predicted > MEMORY_LIMIT:
        reason = (f"predicted peak memory {predicted / 2**30:.2f} GiB > available {MEMORY_LIMIT / 2**30:.2f} GiB "
                  "(batch 16 x 384 tokens, fp32); try training.batch_size=8 with training.gradient_accumulation_steps=2")
        trial.set_user_attr("infeasible_reason", reason)
        raise optuna.TrialPruned(f"infeasible: {reason}")
    # Response surface: best near lr=4e-3, aux=1e-2, capacity 1.25-1.5.
    q = math.exp(-(math.log10(lr / 4e-3) / 0.45) ** 2) * math.exp(-(math.log10(aux / 1e-2) / 0.9) ** 2)
    q *= 1.0 - 0.15 * abs(cap - 1.4)
    final_em = max(0.0, min(1.0, 0.55 * q + rng.gauss(0, 0.03)))
    collapse = aux < 2e-3
    diverge_at = 30 + rng.randrange(40) if lr > 3e-2 else None
    overfit = lr > 8e-3 and rng.random() < 0.5
    underfit = lr < 6e-4
    spike_at = 70 if 1.5e-2 < lr <= 3e-2 else None
    train_hist, eval_hist = [], []
    loss0 = 7.6
    floor = 1.0 + 3.5 * (1 - q)
    for step in range(LOG_EVERY, STEPS + 1, LOG_EVERY):
        frac = step / STEPS
        if underfit:
            loss = loss0 - 0.4 * frac + rng.gauss(0, 0.02)
        else:
            loss = floor + (loss0 - floor) * math.exp(-4 * frac) + rng.gauss(0, 0.02)
        gn = 1.2 + rng.gauss(0, 0.05)
        if spike_at and step == spike_at:
            loss *= 2.2
        if diverge_at and step >= diverge_at - 10:
            gn *= 30 * (step - diverge_at + 12)
        util = 0.3 if collapse and step > 30 else 0.95
        train_hist.append({"step": step, "train/loss": loss, "train/grad_norm": gn, "train/aux_loss": 1.05,
                           "expert/utilization": util, "moe/dropped_fraction": 0.05 / cap,
                           "train/tokens_per_sec": 4000 / cap})
        if diverge_at and step >= diverge_at:
            trial.set_user_attr("train_history", train_hist)
            trial.set_user_attr("failure_reason", f"training diverged at step {step}: loss is not finite "
                                                  "(reduce learning_rate 2-5x, lower max_grad_norm, add router_z_loss_coef)")
            raise FakeDiverged(f"diverged at step {step}")
        if step % EVAL_EVERY == 0:
            ev_loss = loss + 0.3 + (0.25 * max(0.0, frac - 0.4) * 8 if overfit else 0.0)
            em = final_em * min(1.0, frac * 1.3)
            em = round(em * EVAL_N) / EVAL_N
            eval_hist.append({"step": step, "eval/loss": ev_loss, "eval/perplexity": math.exp(ev_loss),
                              "eval/exact_match": em, "eval/valid_sql": min(1.0, em + 0.3),
                              "eval/num_examples": EVAL_N})
            trial.set_user_attr("eval_history", eval_hist)
            if not multi:
                trial.report(em, step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at_step", step)
                    trial.set_user_attr("train_history", train_hist)
                    trial.set_user_attr("exact_match", max(h["eval/exact_match"] for h in eval_hist))
                    trial.set_user_attr("wall_time_s", 0.2 * step)
                    raise optuna.TrialPruned(f"pruned at step {step}")
    best_em = max(h["eval/exact_match"] for h in eval_hist)
    peak = int((140 + 130 * (cap - 1.0)) * 2**20 * (1 + rng.gauss(0, 0.02)))
    tps = 4000 / cap * (1 + rng.gauss(0, 0.05))
    attrs = {"exact_match": best_em, "final_exact_match": eval_hist[-1]["eval/exact_match"],
             "valid_sql": eval_hist[-1]["eval/valid_sql"], "eval_loss": eval_hist[-1]["eval/loss"],
             "peak_memory_bytes": peak, "tokens_per_sec": tps, "wall_time_s": STEPS * 16 * 300 / tps,
             "dropped_fraction": 0.05 / cap, "steps": STEPS, "eval_examples": EVAL_N,
             "train_history": train_hist[-200:]}
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if multi:
        return best_em, peak / 2**20
    return best_em


def make_demo_study(n_trials: int, *, storage=None, study_name: str = "demo-joint", seed: int = 0,
                    multi: bool = False) -> optuna.Study:
    """A study of `n_trials` fake trials (baseline first), built with TPE + median pruning
    in memory and copied into `storage` (a URL or storage object) when given."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # diverged fake trials are expected
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    mem = optuna.create_study(study_name=study_name, directions=directions,
                              sampler=optuna.samplers.RandomSampler(seed=seed),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=40))
    names = ["exact_match", "peak_memory"] if multi else ["exact_match"]
    mem.set_metric_names(names)              # as studies.study.open_study names them
    mem.set_user_attr("sweep", "joint")
    mem.set_user_attr("model", "tiny")
    mem.set_user_attr("fingerprint", {"data_source": "synthetic", "objectives":
                                      "exact_match,peak_memory" if multi else "exact_match",
                                      "data_split": f"eval={EVAL_N}", "tokenizer": "demo", "metric": "em-spider-v1",
                                      "code_version": "demo"})
    mem.enqueue_trial(BASE_PARAMS, user_attrs={"baseline": True})
    rng = random.Random(seed)
    try:
        mem.optimize(lambda t: fake_objective(t, random.Random(rng.random()), multi=multi), n_trials=n_trials,
                     catch=(FakeDiverged,))
    finally:
        optuna.logging.set_verbosity(verbosity)
    if storage is None:
        return mem
    dst = optuna.create_study(study_name=study_name, storage=storage, directions=directions)
    dst.set_metric_names(names)
    for k, v in mem.user_attrs.items():
        dst.set_user_attr(k, v)
    dst.add_trials(mem.get_trials(deepcopy=False))
    return dst
