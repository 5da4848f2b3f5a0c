"""Feasibility before launch: a sampled configuration predicted not to fit is pruned at once.

`check_trial` runs the trainer's memory prediction (vantage_core.model.memory) for the
configuration a trial sampled, stores the prediction in the trial's user attributes and,
when the predicted peak exceeds the machine's memory (or the sweep's ``--max-memory``),
stores the reason as ``infeasible_reason`` and raises `optuna.TrialPruned` before any
training starts. Reports count these trials.
"""

from __future__ import annotations

import logging
import re

import optuna

from vantage_core.errors import MemoryBudgetError, VantageError

log = logging.getLogger("vantage.sweep")

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2,
          "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4,
          "tb": 1000 ** 4, "tib": 1024 ** 4}


def parse_size(text: str | int | None) -> int | None:
    """'8GiB' -> 8589934592; '500MB' -> 500000000; '1.5g' -> 1.5 GiB; plain numbers are bytes."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise VantageError(f"cannot read memory size '{text}' (e.g. 8GiB, 16GB, 512MiB, or bytes)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise VantageError(f"memory size must be > 0, got '{text}'")
    return value


def check_trial(trial: optuna.Trial, cfg, max_memory: int | None = None) -> dict | None:
    """Predict `cfg`'s training memory; prune `trial` (with ``infeasible_reason``) if it won't fit.

    Returns the prediction (a dict of bytes, see `predict_memory`) or None when no predictor
    is available.
    """
    try:
        from vantage_core.model.memory import check_fits, predict_memory
    except ImportError:  # pragma: no cover - the predictor ships with vantage_core
        return None
    try:
        pred = predict_memory(cfg)
    except Exception as e:  # a prediction bug must never stop a sweep
        log.warning("trial %d: memory prediction failed (%s); launching unchecked", trial.number, e)
        return None
    trial.set_user_attr("predicted_peak_memory_bytes", int(pred["peak"]))
    try:
        from vantage_core.model.memory import predict_time
        trial.set_user_attr("predicted_time_s", round(float(predict_time(cfg)["total_s"]), 1))
    except Exception as e:  # informative only: never blocks a trial
        log.debug("trial %d: time prediction failed (%s)", trial.number, e)
    try:
        check_fits(cfg, limit_bytes=max_memory)
    except MemoryBudgetError as e:
        reason = str(e)
        if max_memory is not None:
            reason += f" [--max-memory {max_memory / 2**30:.2f} GiB]"
        trial.set_user_attr("infeasible_reason", reason)
        log.warning("trial %d: infeasible, pruned before launch: %s", trial.number, reason)
        raise optuna.TrialPruned(f"infeasible: {reason}") from None
    return pred


# --- Refusing a whole sweep before any study is created or changed -----------------------------

# Extra ways to shrink a sweep, beside the lean-memory keys below: callables `base -> [(name,
# Config)]` (the muP `--proxy` option registers itself here: a width-scaled proxy's config).
EXTRA_OPTIONS: list = []

_MAX_CORNERS = 256


def _corner_values(r) -> list:
    if r.kind == "categorical":
        return list(r.choices)
    if r.kind == "int":
        return sorted({int(r.low), int(r.high)})
    return sorted({r.low, r.high})


def _space_configs(space, base, ranges):
    """Each corner of the space (every choice of a categorical, both ends of a range: the
    predicted memory is monotone in each parameter), as a Config; invalid combinations skipped."""
    import itertools

    from vantage_core.errors import ConfigError
    rs = space.ranges(base, ranges)
    names = list(rs)
    combos = itertools.product(*(_corner_values(rs[n]) for n in names))
    for values in itertools.islice(combos, _MAX_CORNERS):
        try:
            yield space.apply(base, dict(zip(names, values)))
        except ConfigError:
            continue


def lean_options(cfg) -> list[tuple[str, object]]:
    """The memory-saving changes to `cfg` by name (`section.key=value`, comma-joined), each as
    the Config it gives: the lean-memory keys alone and together, gradient checkpointing,
    halved micro-batches with doubled accumulation, chunked LM-head loss, then EXTRA_OPTIONS."""
    t = cfg.training
    steps: list[dict] = []
    lean = {}
    if t.master_weights != "bfloat16":
        one = {"master_weights": "bfloat16", "mixed_precision": "bf16"}
        steps.append(one)
        lean.update(one)
    if t.optimizer_state_dtype != "bfloat16":
        steps.append({"optimizer_state_dtype": "bfloat16"})
        lean.update(steps[-1])
    if t.optimizer != "adafactor":
        steps.append({"optimizer": "adafactor"})
    if not t.gradient_checkpointing:
        steps.append({"gradient_checkpointing": True})
        lean.update(steps[-1])
    if not t.loss_chunk_rows:
        steps.append({"loss_chunk_rows": 1024})
        lean.update(steps[-1])
    if t.compile:   # the compiled optimizer step holds old and new weights+state (memory.py)
        steps.append({"compile": False})
        lean.update(steps[-1])
    b, acc = t.batch_size, t.gradient_accumulation_steps
    while b > 1:
        b, acc = b // 2, acc * 2
        steps.append({"batch_size": b, "gradient_accumulation_steps": acc})
    if len(lean) > 2:
        steps.append(dict(lean))
        steps.append({**lean, "optimizer": "adafactor", "optimizer_state_dtype": t.optimizer_state_dtype})
        steps.append({**lean, "optimizer": "adafactor", "batch_size": 1,
                      "gradient_accumulation_steps": t.batch_size * t.gradient_accumulation_steps})
    out = []
    from vantage_core.errors import ConfigError
    for change in steps:
        change = {k: v for k, v in change.items() if getattr(t, k) != v}
        if not change:
            continue
        try:
            new = cfg.replace(training=change)
        except ConfigError:
            continue
        name = ",".join(f"training.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in change.items())
        out.append((name, new))
    for extra in EXTRA_OPTIONS:
        out.extend(extra(cfg))
    return out


def check_sweep_fits(space, base, ranges=None, max_memory: int | None = None, *, sweep: str = "") -> dict:
    """Raise MemoryBudgetError (one line, exit 2) when no configuration `space` can sample from
    `base` is predicted to fit `max_memory` (default: the machine's memory): the lowest
    predicted peak over the space, the memory available, and the options that would fit
    (by name, each with its predicted peak). Returns the best prediction otherwise. Called
    before any storage is opened, so a refused sweep creates and changes no study."""
    from vantage_core.model.memory import GiB, device_memory_bytes, predict_memory
    limit = int(max_memory if max_memory is not None else device_memory_bytes())
    best, best_cfg = None, base
    for cfg in _space_configs(space, base, ranges):
        pred = predict_memory(cfg)
        if best is None or pred["peak"] < best["peak"]:
            best, best_cfg = pred, cfg
    if best is None:
        best = predict_memory(base)
    if best["peak"] <= limit:
        return best
    fits = sorted(((name, predict_memory(c)["peak"]) for name, c in lean_options(best_cfg)), key=lambda x: x[1])
    fits = [(n, p) for n, p in fits if p <= limit]
    g = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    where = f"--max-memory {g(limit)}" if max_memory is not None else f"device memory {g(limit)}"
    if fits:
        hint = "would fit: " + "; ".join(f"{n} ({g(p)})" for n, p in fits[:6]) + \
               " (add with --set, or use a config with them, e.g. configs/medium_lean.yaml)"
    else:
        hint = "no lean-memory option fits either: use a smaller model config or more memory"
    raise MemoryBudgetError(
        f"sweep {sweep}: no configuration the search space can sample fits: lowest predicted peak "
        f"{g(best['peak'])} > available {g(limit)} ({where}); no study was created or changed; {hint}")
