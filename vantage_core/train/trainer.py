"""The training loop: `train(config, data, callbacks) -> TrainResult`. Imports no Optuna."""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..blas import active_blas, load_openblas

load_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

from ..config import Config  # noqa: E402
from ..data.prepare import PreparedData  # noqa: E402
from ..errors import TrainingDiverged  # noqa: E402
from ..model import MoETransformer  # noqa: E402
from . import metrics as M  # noqa: E402
from .callbacks import HistoryRecorder  # noqa: E402
from .checkpoint import (load_optimizer, load_state, load_weights,  # noqa: E402
                         save_checkpoint)
from .optim import lr_at, make_optimizer  # noqa: E402

log = logging.getLogger(__name__)

DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}


@dataclass
class TrainResult:
    status: str                       # "completed" | "diverged"
    steps: int
    best_exact_match: float
    final_exact_match: float
    eval_loss: float
    valid_sql: float
    peak_memory_bytes: int
    tokens_per_sec: float
    wall_time_s: float
    dropped_fraction: float
    train_history: list[dict] = field(default_factory=list)
    eval_history: list[dict] = field(default_factory=list)
    best_checkpoint: str | None = None
    error: str | None = None


def build_model(cfg: Config) -> MoETransformer:
    t = cfg.training
    model = MoETransformer(cfg.model, checkpoint_layers=t.gradient_checkpointing or t.activation_checkpointing)
    if t.mixed_precision != "fp32":
        model.set_dtype(DTYPES[t.mixed_precision])
    mx.eval(model.parameters())
    return model


def loss_fn(model, cfg: Config, inputs, positions, targets, weights):
    # inputs: [B, L]; positions/targets/weights: [S], the flattened SQL positions only (the
    # loss ignores the prompt, so the LM head and its softmax run on S << B*L rows).
    logits, st = model(inputs, positions=positions)                       # [S, V]
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")
    ce = (ce * weights).sum() / mx.maximum(weights.sum(), 1)
    total = ce + cfg.model.router_aux_loss_coef * st["aux_loss"] + cfg.model.router_z_loss_coef * st["z_loss"]
    return total, (ce, st["aux_loss"], st["z_loss"], st["dropped"], st["counts"])


def _bucket(n: int, cap: int) -> int:
    # Few distinct shapes keep mx.compile from retracing every step.
    return min(cap, max(32, int(math.ceil(n / 32.0) * 32)))


class Batcher:
    """Shuffled epochs over the training sequences; its position is checkpointed."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._make_perm()

    def _make_perm(self):
        return np.random.RandomState(self.seed + self.epoch).permutation(self.n)

    def next_indices(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch += 1
                self.pos = 0
                self._perm = self._make_perm()
            take = min(k - len(out), self.n - self.pos)
            out.extend(self._perm[self.pos: self.pos + take].tolist())
            self.pos += take
        return out

    def state(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, s):
        self.epoch, self.pos = s["epoch"], s["pos"]
        self._perm = self._make_perm()


def make_batch(seqs, max_len: int, pad_id: int):
    """Right-padded inputs [B, L] plus the flattened SQL positions, their targets and weights
    (padded to a bucketed length S with weight 0). Returns (inputs, pos, tgt, w, n_tokens)."""
    L = _bucket(max(len(s.ids) for s in seqs) - 1, max_len)
    inp = np.full((len(seqs), L), pad_id, dtype=np.int32)
    pos, tgt = [], []
    ntok = 0
    for b, s in enumerate(seqs):
        ids = s.ids[: L + 1]
        n = len(ids) - 1
        inp[b, :n] = ids[:-1]
        ntok += n
        start = max(0, s.sql_start - 1)          # predict the SQL tokens and END
        pos.extend(range(b * L + start, b * L + n))
        tgt.extend(ids[start + 1: n + 1])
    S = int(math.ceil(max(1, len(pos)) / 128.0) * 128)
    w = np.zeros(S, np.float32)
    w[: len(pos)] = 1.0
    pos_a = np.zeros(S, np.int32)
    pos_a[: len(pos)] = pos
    tgt_a = np.zeros(S, np.int32)
    tgt_a[: len(tgt)] = tgt
    return mx.array(inp), mx.array(pos_a), mx.array(tgt_a), mx.array(w), ntok


def _expert_stats(counts: np.ndarray) -> dict[str, Any]:
    # counts: [layers, E] assignments in the last step
    tot = counts.sum(axis=1, keepdims=True).clip(min=1)
    frac = counts / tot
    E = counts.shape[1]
    used = (frac > (0.1 / E)).mean()
    return {
        M.EXPERT_UTILIZATION: float(used),
        M.EXPERT_LOAD_BALANCE: float((frac * E).var(axis=1).mean()),
        M.EXPERT_TOKENS: [int(c) for c in counts.sum(axis=0)],
    }


def evaluate(model, cfg: Config, data: PreparedData, *, step: int = 0) -> dict[str, Any]:
    """Eval loss/perplexity on the eval slice (teacher forced) and greedy-decoded exact match."""
    from ..eval.generate import generate_greedy
    from ..eval.scoring import quick_scores

    model.eval()
    tok = data.tokenizer
    # Teacher-forced loss over the same fixed slice.
    enc = [data.valid_encoded[data.valid.index(e)] for e in data.eval_examples] if data.eval_examples else []
    tot, n = 0.0, 0
    for s in range(0, len(enc), cfg.eval.batch_size):
        inp, pos, tgt, w, _ = make_batch(enc[s: s + cfg.eval.batch_size], 1 << 30, tok.pad_id)
        logits, _ = model(inp, positions=pos)
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), tgt, reduction="none")
        tot += float((ce * w).sum().item())
        n += int(w.sum().item())
    eval_loss = tot / max(1, n)
    outs = generate_greedy(model, data.eval_prompts, pad_id=tok.pad_id, end_id=tok.end_id,
                           max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    preds = [tok.decode(o).strip() for o in outs]
    em, valid = quick_scores(data.eval_examples, preds, data.schemas, data.splits,
                             compare_values=cfg.eval.compare_values, compare_distinct=cfg.eval.compare_distinct)
    model.train()
    return {M.STEP: step, M.EVAL_LOSS: eval_loss, M.EVAL_PPL: float(math.exp(min(eval_loss, 50))),
            M.EVAL_EXACT_MATCH: em, M.EVAL_VALID_SQL: valid, "eval/num_examples": len(preds),
            "predictions": preds}


def _prune_checkpoints(out: Path, limit: int) -> None:
    ckpts = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    for p in ckpts[: max(0, len(ckpts) - limit)]:
        shutil.rmtree(p, ignore_errors=True)


def make_train_step(model, optimizer, cfg: Config):
    """The compiled pieces of one optimizer step, over model/optimizer/random state:
    `micro(inputs, positions, targets, weights, weight) -> (loss, aux, grads)` (one
    micro-batch, gradients scaled by `weight`), `apply(grads) -> grad_norm` (clip + AdamW),
    and `step(inputs, positions, targets, weights) -> (loss, aux, grad_norm)`: micro + apply
    in one compiled call, used when there is no gradient accumulation (no host round trip
    between the backward pass and the update)."""
    t = cfg.training
    grad_fn = nn.value_and_grad(model, lambda m, *a: loss_fn(m, cfg, *a))

    def clip(grads):
        norm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grads)))
        if t.max_grad_norm > 0:
            scale = mx.minimum(1.0, t.max_grad_norm / (norm + 1e-6))
            grads = tree_map(lambda g: g * scale.astype(g.dtype), grads)
        return grads, norm

    def micro(inputs, positions, targets, weights, weight):
        (loss, aux), grads = grad_fn(model, inputs, positions, targets, weights)
        grads = tree_map(lambda g: g * weight, grads)
        return loss, aux, grads

    def apply(grads):
        grads, norm = clip(grads)
        optimizer.update(model, grads)
        return norm

    def step(inputs, positions, targets, weights):
        (loss, aux), grads = grad_fn(model, inputs, positions, targets, weights)
        return loss, aux, apply(grads)

    if not t.compile:
        return micro, apply, step
    state = [model.state, optimizer.state, mx.random.state]
    return (mx.compile(micro, inputs=state, outputs=state), mx.compile(apply, inputs=state, outputs=state),
            mx.compile(step, inputs=state, outputs=state))


def train(config: Config, data: PreparedData, callbacks: Iterable[Any] = (), *,
          output_dir: str | Path | None = None, resume_from: str | Path | None = None,
          init_weights_from: str | Path | None = None) -> TrainResult:
    """Train one model. `callbacks` receive train/eval reports; an exception raised by a
    callback (e.g. a pruner) stops training and propagates."""
    cfg, t = config, config.training
    callbacks = list(callbacks)
    history = HistoryRecorder()
    callbacks.append(history)
    mx.random.seed(t.seed)
    random.seed(t.seed)
    model = build_model(cfg)
    optimizer = make_optimizer(t)
    batcher = Batcher(len(data.train), t.seed)
    start_step, best_em = 0, -1.0
    out = Path(output_dir) if output_dir else None
    if init_weights_from or cfg.model.init_from:
        load_weights(model, init_weights_from or cfg.model.init_from)
    if resume_from:
        load_weights(model, resume_from)
        st = load_state(resume_from)
        if st.get("step") is not None and (Path(resume_from) / "optimizer.safetensors").is_file():
            optimizer.init(model.trainable_parameters())
            load_optimizer(optimizer, resume_from)
            start_step = int(st["step"])
            batcher.restore(st["batcher"])
            best_em = float(st.get("best_exact_match", -1.0))
            mx.random.state[0] = mx.array(np.array(st["mx_rng"], dtype=np.uint32))
    log.info("training: %s, BLAS: %s, device: %s", data.source, active_blas(), mx.default_device())

    accum = t.gradient_accumulation_steps
    micro_c, apply_c, step_c = make_train_step(model, optimizer, cfg)

    model.train()
    mx.reset_peak_memory()
    tokens_done, train_time = 0, 0.0
    last_eval: dict[str, Any] = {}
    dropped_acc, dropped_n = 0.0, 0
    best_path = None
    t_start = time.perf_counter()
    step = start_step
    status, error = "completed", None
    window_t, window_steps, window_tokens = 0.0, 0, 0
    try:
        while step < t.num_train_steps:
            t0 = time.perf_counter()
            grads_acc = None
            loss_sum, aux_sum, z_sum, drop_sum = 0.0, 0.0, 0.0, 0.0
            counts = None
            for _ in range(accum):
                idx = batcher.next_indices(t.batch_size)
                inp, pos, tgt, w, ntok = make_batch([data.train[i] for i in idx], t.max_seq_length,
                                                    data.tokenizer.pad_id)
                loss, (ce, aux, z, dropped, cnt), grads = micro_c(inp, pos, tgt, w, mx.array(1.0 / accum))
                grads_acc = grads if grads_acc is None else tree_map(mx.add, grads_acc, grads)
                mx.eval(grads_acc, loss, ce, aux, z, dropped, cnt)
                loss_sum += ce.item() / accum
                aux_sum += aux.item() / accum
                z_sum += z.item() / accum
                drop_sum += dropped.item() / accum
                counts = np.array(cnt) if counts is None else counts + np.array(cnt)
                tokens_done += ntok
                window_tokens += ntok
            lr = float(lr_at(step, t).item())
            norm = apply_c(grads_acc)
            mx.eval(model.parameters(), optimizer.state, norm)
            step += 1
            dt = time.perf_counter() - t0
            train_time += dt
            window_t += dt
            window_steps += 1
            gn = float(norm.item())
            if not math.isfinite(loss_sum):
                raise TrainingDiverged(step, "loss")
            if not math.isfinite(gn):
                raise TrainingDiverged(step, "gradient norm")
            dropped_acc += drop_sum
            dropped_n += 1
            if step % t.logging_steps == 0 or step == t.num_train_steps:
                rep = {M.STEP: step, M.TRAIN_LOSS: loss_sum, M.TRAIN_AUX_LOSS: aux_sum, M.TRAIN_Z_LOSS: z_sum,
                       M.TRAIN_LR: lr, M.TRAIN_GRAD_NORM: gn,
                       M.TRAIN_STEPS_PER_SEC: window_steps / max(window_t, 1e-9),
                       M.TRAIN_TOKENS_PER_SEC: window_tokens / max(window_t, 1e-9),
                       M.DROPPED_FRACTION: drop_sum, M.PEAK_MEMORY: int(mx.get_peak_memory()),
                       **_expert_stats(counts)}
                window_t, window_steps, window_tokens = 0.0, 0, 0
                for cb in callbacks:
                    cb.on_train_report(rep)
            is_eval = step % t.eval_steps == 0 or step == t.num_train_steps
            if is_eval and data.eval_examples:
                last_eval = evaluate(model, cfg, data, step=step)
                em = last_eval[M.EVAL_EXACT_MATCH]
                improved = em > best_em
                best_em = max(best_em, em)
                rep = {k: v for k, v in last_eval.items() if k != "predictions"}
                if out is not None:
                    ck_state = {"step": step, "batcher": batcher.state(), "best_exact_match": best_em,
                                "mx_rng": np.array(mx.random.state[0]).tolist(), "eval": rep}
                    if improved:
                        best_path = save_checkpoint(out / "checkpoint-best", model=model, config=cfg,
                                                    tokenizer=data.tokenizer, state=ck_state)
                for cb in callbacks:
                    cb.on_eval_report(rep)
            if out is not None and (step % t.save_steps == 0 or step == t.num_train_steps):
                ck_state = {"step": step, "batcher": batcher.state(), "best_exact_match": best_em,
                            "mx_rng": np.array(mx.random.state[0]).tolist()}
                save_checkpoint(out / "checkpoint-latest", model=model, config=cfg, tokenizer=data.tokenizer,
                                optimizer=optimizer, state=ck_state)
                if step % t.save_steps == 0:
                    save_checkpoint(out / f"checkpoint-{step}", model=model, config=cfg,
                                    tokenizer=data.tokenizer, optimizer=optimizer, state=ck_state)
                    _prune_checkpoints(out, t.save_total_limit)
    except TrainingDiverged as e:
        status, error = "diverged", str(e)
        log.error("%s", e)
    finally:
        for cb in callbacks:
            if hasattr(cb, "close") and cb is not history:
                try:
                    cb.close()
                except Exception:  # a sink failing to close must not mask the real error
                    log.debug("callback close failed", exc_info=True)
    return TrainResult(
        status=status, steps=step, best_exact_match=max(best_em, 0.0),
        final_exact_match=last_eval.get(M.EVAL_EXACT_MATCH, 0.0),
        eval_loss=last_eval.get(M.EVAL_LOSS, float("nan")), valid_sql=last_eval.get(M.EVAL_VALID_SQL, 0.0),
        peak_memory_bytes=int(mx.get_peak_memory()), tokens_per_sec=tokens_done / max(train_time, 1e-9),
        wall_time_s=time.perf_counter() - t_start, dropped_fraction=dropped_acc / max(1, dropped_n),
        train_history=history.train, eval_history=history.eval,
        best_checkpoint=str(best_path) if best_path else None, error=error,
    )
