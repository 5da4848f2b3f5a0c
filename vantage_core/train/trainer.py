"""The training loop: `train(config, data, callbacks, evaluate=...) -> TrainResult`.

As mlx_lm's trainer takes its `loss` and `iterate_batches`, `train` takes its periodic
evaluation as a function (vantage_core/eval/evaluate.py `evaluate` decodes and scores), so
this package imports nothing from eval/ or above. Imports no Optuna."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..blas import active_blas, load_openblas

load_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

from ..config import Config  # noqa: E402
from ..data.prepare import PreparedData  # noqa: E402
from ..data.tokenizer import SQLTokenizer  # noqa: E402
from ..errors import CheckpointError, TrainingDiverged, VantageError  # noqa: E402
from ..fileio import atomic_write  # noqa: E402
from ..model import build_model  # noqa: E402
from ..model.fastmath import cross_entropy  # noqa: E402
from ..model.memory import check_fits  # noqa: E402
from ..sources import check_hf_config, find_checkpoint, is_dense_source, is_hf_folder  # noqa: E402
from ..weights import load_optimizer, load_state, load_weights, save_checkpoint  # noqa: E402
from . import metrics as M  # noqa: E402
from .callbacks import HistoryRecorder, JSONLSink  # noqa: E402
from .diagnose import DiagnoseCallback  # noqa: E402
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
    findings: list = field(default_factory=list)   # diagnose.Finding (guide's troubleshooting)


# Static loss scale for fp16 (its 5-bit exponent underflows small gradients otherwise);
# bf16 has fp32's range and needs none.
FP16_LOSS_SCALE = 1024.0


def _cast_tree(tree, dtype):
    # Parameters already in `dtype` (training.master_weights: bfloat16) are used as they are: no copy.
    return tree_map(lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) and p.dtype != dtype
                    else p, tree)


def to_master_dtype(model, cfg: Config) -> None:
    """training.master_weights: bfloat16 stores the parameters themselves in bf16 (no float32
    masters; the optimizer rounds each update stochastically, train/optim.py)."""
    if cfg.training.master_weights == "bfloat16":
        model.update(_cast_tree(model.parameters(), mx.bfloat16))


class compute_precision:
    """`with compute_precision(model, cfg):` the model's parameters are the compute-dtype
    copy (bf16/fp16) inside the block and the fp32 masters again after it."""

    def __init__(self, model, cfg: Config):
        self.model, self.dtype = model, DTYPES[cfg.training.mixed_precision]

    def __enter__(self):
        self.masters = self.model.parameters()
        if self.dtype != mx.float32:
            self.model.update(_cast_tree(self.masters, self.dtype))
        return self.model

    def __exit__(self, *exc):
        self.model.update(self.masters)


def value_and_grad_mp(model, cfg: Config):
    """Like `nn.value_and_grad(model, loss_fn)` but computing in the configured precision:
    the fp32 trainable parameters are cast inside the differentiated function, so the
    gradients come back fp32 (the cast's vjp) for fp32 AdamW on fp32 masters."""
    dtype = DTYPES[cfg.training.mixed_precision]
    if dtype == mx.float32:
        return nn.value_and_grad(model, lambda m, *a: loss_fn(m, cfg, *a))
    scale = FP16_LOSS_SCALE if dtype == mx.float16 else 1.0

    def f(params, *args):
        model.update(_cast_tree(params, dtype))
        loss, aux = loss_fn(model, cfg, *args)
        return loss.astype(mx.float32) * scale, aux

    vg = mx.value_and_grad(f)

    def run(_model, *args):
        params = model.trainable_parameters()
        (loss, aux), grads = vg(params, *args)
        model.update(params)               # back to the fp32 masters
        if scale != 1.0:
            loss = loss / scale
            grads = tree_map(lambda g: g / scale, grads)
        return (loss, aux), grads
    return run


def loss_fn(model, cfg: Config, inputs, positions, targets, weights):
    # inputs: [B, L]; positions/targets/weights: [S], the flattened SQL positions only (the
    # loss ignores the prompt, so the LM head and its softmax run on S << B*L rows).
    chunk = cfg.training.loss_chunk_rows
    if chunk and positions.shape[0] > chunk:
        h, st = model(inputs, positions=positions, hidden_only=True)      # [S, D]
        ce = chunked_cross_entropy(h, model.head_weight(), targets, chunk)
    else:
        logits, st = model(inputs, positions=positions)                   # [S, V]
        # = nn.losses.cross_entropy(logits.astype(mx.float32), targets): float32 per row, fused
        # on the GPU, one (fast) exp pass on the CPU (model/fastmath.py).
        ce = cross_entropy(logits, targets)
    ce = (ce * weights).sum() / mx.maximum(weights.sum(), 1)
    total = ce + cfg.model.router_aux_loss_coef * st["aux_loss"] + cfg.model.router_z_loss_coef * st["z_loss"]
    return total, (ce, st["aux_loss"], st["z_loss"], st["dropped"], st["counts"])


def _head_ce(w, h, t):
    # w: [V, D] head weight, h: [c, D] hidden rows, t: [c] -> [c] cross entropy. mx.checkpoint
    # differentiates every input: the integer targets must not reach mx.fast.cross_entropy's
    # VJP (the GPU's form), which refuses them.
    return cross_entropy(h @ w.T, mx.stop_gradient(t))


_head_ce_ckpt = mx.checkpoint(_head_ce)


def chunked_cross_entropy(h: mx.array, w: mx.array, targets: mx.array, chunk: int) -> mx.array:
    """Per-row cross entropy of `h @ w.T` computed `chunk` rows at a time, each chunk's logits
    recomputed in the backward pass (mx.checkpoint), so at most [chunk, V] logits are alive:
    with a 49k vocabulary the [S, V] logits (and their float32 softmax) are the largest
    activation otherwise. The head weight is an argument, so its gradient flows."""
    parts = [_head_ce_ckpt(w, h[s: s + chunk], targets[s: s + chunk]) for s in range(0, h.shape[0], chunk)]
    return mx.concatenate(parts)


def _bucket(n: int, cap: int, multiple: int = 32) -> int:
    # Few distinct shapes keep mx.compile from retracing every step.
    return min(cap, max(multiple, int(math.ceil(n / multiple) * multiple)))


class Batcher:
    """Shuffled epochs over the training sequences; its position is checkpointed.

    With `lengths` and `batch_size` (training.group_by_length), each epoch's shuffled order is
    cut into windows of GROUP_WINDOW batches, each window sorted by length and cut into
    batches, and the batches shuffled: batches hold sequences of similar length (less padding),
    and the order is still a function of (seed, epoch) alone, so resuming stays exact."""

    GROUP_WINDOW = 16

    def __init__(self, n: int, seed: int, lengths: list[int] | None = None, batch_size: int = 0):
        self.n, self.seed = n, seed
        self.lengths = np.asarray(lengths) if lengths is not None else None
        self.batch_size = batch_size
        self.epoch, self.pos = 0, 0
        self._perm = self._make_perm()

    def _make_perm(self):
        rs = np.random.RandomState(self.seed + self.epoch)
        perm = rs.permutation(self.n)
        if self.lengths is None or self.batch_size <= 1:
            return perm
        b, w = self.batch_size, self.batch_size * self.GROUP_WINDOW
        batches = []
        for s in range(0, self.n, w):
            win = perm[s: s + w]
            win = win[np.argsort(self.lengths[win], kind="stable")]
            batches += [win[i: i + b] for i in range(0, len(win), b)]
        order = rs.permutation(len(batches))
        return np.concatenate([batches[i] for i in order])

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


def padded_length(data: PreparedData, max_len: int, multiple: int = 32) -> int:
    """The longest input length any training batch is padded to (make_batch's bucket)."""
    if not data.train:
        return max_len
    return _bucket(max(len(s.ids) for s in data.train) - 1, max_len, multiple)


def make_batch(seqs, max_len: int, pad_id: int, multiple: int = 32):
    """Right-padded inputs [B, L] plus the flattened SQL positions, their targets and weights
    (padded to a bucketed length S with weight 0). Returns (inputs, pos, tgt, w, n_tokens)."""
    L = _bucket(max(len(s.ids) for s in seqs) - 1, max_len, multiple)
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
    grad_fn = value_and_grad_mp(model, cfg)

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

    def step_with(apply_fn):
        def step(inputs, positions, targets, weights):
            (loss, aux), grads = grad_fn(model, inputs, positions, targets, weights)
            return loss, aux, apply_fn(grads)
        return step

    step = step_with(apply)

    if not t.compile:
        return micro, apply, step
    state = [model.state, optimizer.state, mx.random.state]
    if cfg.model.moe_impl == "sorted":
        # Its expert sizes are read back mid-forward (new shapes every step): only the
        # optimizer update is compiled.
        capply = mx.compile(apply, inputs=state, outputs=state)
        return micro, capply, step_with(capply)
    return (mx.compile(micro, inputs=state, outputs=state), mx.compile(apply, inputs=state, outputs=state),
            mx.compile(step, inputs=state, outputs=state))


def _step_seed(seed: int, step: int) -> int:
    # The random state of step `step` depends only on (seed, step): dropout masks are the same
    # whether a run got there in one go or resumed from a checkpoint.
    return (seed * 1_000_003 + step * 7919 + 12345) % (2 ** 31)


def _weights_finite(model) -> bool:
    tot = sum(mx.sum(mx.abs(p.astype(mx.float32))) for _, p in tree_flatten(model.trainable_parameters()))
    return bool(mx.isfinite(tot).item())


def _write_status(out: Path | None, status: str, **extra) -> None:
    if out is None:
        return
    atomic_write(out / "run_status.json", json.dumps({"status": status, **extra}, indent=1), what="run status")


def _write_predictions(path: Path, examples, preds) -> None:
    lines = [json.dumps({"id": e.id, "db_id": e.db_id, "question": e.question, "gold": e.query,
                         "prediction": p}, ensure_ascii=False) for e, p in zip(examples, preds)]
    try:   # a by-product: a full disk fails the run at its next checkpoint, not here
        atomic_write(path, "\n".join(lines) + "\n", what="predictions")
    except (OSError, VantageError) as e:
        log.warning("%s: predictions not written (%s)", path, e)


def _ck_state(step, batcher, best_em, tokens_done, extra=None):
    st = {"step": step, "batcher": batcher.state(), "best_exact_match": best_em,
          "tokens_done": tokens_done, "rng": "per-step seed: seed*1000003 + step*7919 + 12345"}
    st.update(extra or {})
    return st


def _check_init_source(path: str | Path, cfg: Config, data: PreparedData) -> None:
    """Weights from another run or a Hugging Face Mixtral folder: the architecture must hold
    them and the data must be encoded with the tokenizer they were trained with."""
    if is_dense_source(path):
        theirs = SQLTokenizer.from_pretrained(path)
        if data.tokenizer is not None and theirs.fingerprint() != data.tokenizer.fingerprint():
            raise CheckpointError(f"model.init_from {path}: its tokenizer differs from the data's tokenizer "
                                  f"(prepare the data with this config)")
        return
    p = Path(path)
    if is_hf_folder(p):
        for note in check_hf_config(p, cfg.model):
            log.info("init_from %s", note)
    tok_file = p / "tokenizer.json"
    if tok_file.is_file() and data.tokenizer is not None:
        theirs = SQLTokenizer.load_for_model(tok_file, cfg.model.vocab_size)
        if theirs.fingerprint() != data.tokenizer.fingerprint():
            raise CheckpointError(f"{p}/tokenizer.json differs from the data's tokenizer: the weights "
                                  f"would see other token ids (prepare the data with this config, "
                                  f"whose model.init_from makes it use that tokenizer)")


# `evaluate(model, config, data, step=N) -> report`: the eval report (metrics.EVAL_REPORT_KEYS,
# eval/exact_match and eval/loss at least) plus "predictions", one decoded SQL per
# data.eval_examples entry. It puts the model in eval mode and back in train mode when done.
Evaluate = Callable[..., dict[str, Any]]


def train(config: Config, data: PreparedData, callbacks: Iterable[Any] = (), *,
          evaluate: Evaluate | None = None,
          output_dir: str | Path | None = None, resume_from: str | Path | None = None,
          init_weights_from: str | Path | None = None, check_memory: bool = True) -> TrainResult:
    """Train one model. `callbacks` receive train/eval reports; an exception raised by a
    callback (e.g. a pruner) stops training and propagates.

    `evaluate` runs every eval_steps and at the last step when the data has eval examples
    (vantage_core.eval.evaluate.evaluate: teacher-forced loss, greedy decoding, exact match);
    without it there are no eval reports and no checkpoint-best.

    Before anything runs, the predicted peak memory is checked against the device
    (`MemoryBudgetError`, one line; `check_memory=False` skips it). With `output_dir`: the
    resolved config (config.yaml), `checkpoint-N/` every save_steps (the newest
    save_total_limit kept), `checkpoint-latest/`, `checkpoint-best/` (validation exact
    match), metrics.jsonl and run_status.json. `resume_from` continues a run exactly
    (weights, AdamW state, data position, step; the random state is a function of the
    step); a checkpoint without optimizer state (checkpoint-best) loads weights only, as
    does `init_weights_from`. A NaN/inf loss or gradient norm ends the run with
    status "diverged" without overwriting the last good checkpoint."""
    cfg, t = config, config.training
    if check_memory:
        pred = check_fits(cfg, seq_length=padded_length(data, t.max_seq_length, t.pad_to_multiple_of))
        log.info("predicted peak memory %.2f GiB (batch %d x %d tokens)", pred["peak"] / 2**30,
                 t.batch_size, pred["seq_length"])
    out = Path(output_dir) if output_dir else None
    callbacks = list(callbacks)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", cfg.to_yaml(), what="resolved config")
        if not any(isinstance(cb, JSONLSink) for cb in callbacks):
            callbacks.append(JSONLSink(out / "metrics.jsonl"))
        _write_status(out, "running")
    diag = DiagnoseCallback(config=cfg.to_dict())   # remedies skip what the config already has
    history = HistoryRecorder()
    callbacks += [diag, history]
    limit = os.environ.get("VANTAGE_MEMORY_LIMIT_GB")
    if limit:   # processes sharing one device: each frees its buffer cache before passing this
        mx.set_memory_limit(int(float(limit) * 2**30))
        mx.set_cache_limit(int(float(limit) * 2**30 // 4))
    mx.random.seed(t.seed)
    random.seed(t.seed)
    model = build_model(cfg)
    to_master_dtype(model, cfg)
    optimizer = make_optimizer(t)
    batcher = (Batcher(len(data.train), t.seed, [len(s.ids) for s in data.train], t.batch_size)
               if t.group_by_length else Batcher(len(data.train), t.seed))
    start_step, best_em, tokens_done = 0, -1.0, 0
    init = init_weights_from or cfg.model.init_from
    if init:
        _check_init_source(init, cfg, data)
        load_weights(model, init, seed=t.seed)
        to_master_dtype(model, cfg)
        log.info("initialized weights from %s (weights only: step 0, fresh optimizer)", init)
    if resume_from:
        load_weights(model, resume_from)
        to_master_dtype(model, cfg)
        st = load_state(resume_from)
        if st.get("step") is not None and (find_checkpoint(resume_from) / "optimizer.safetensors").is_file():
            optimizer.init(model.trainable_parameters())
            load_optimizer(optimizer, resume_from)
            start_step = int(st["step"])
            batcher.restore(st["batcher"])
            best_em = float(st.get("best_exact_match", -1.0))
            tokens_done = int(st.get("tokens_done", 0))
            log.info("resumed from %s at step %d", resume_from, start_step)
        else:
            log.info("loaded weights from %s (no optimizer state: starting at step 0)", resume_from)
    log.info("training: %s, BLAS: %s, device: %s, precision: %s", data.source, active_blas(),
             mx.default_device(), t.mixed_precision)

    accum = t.gradient_accumulation_steps
    micro_c, apply_c, step_c = make_train_step(model, optimizer, cfg)

    model.train()
    # Free the previous in-process trial's cached buffers so each run's peak is its own.
    mx.clear_cache()
    mx.reset_peak_memory()
    train_time = 0.0
    last_eval: dict[str, Any] = {}
    dropped_acc, dropped_n = 0.0, 0
    best_path = str(out / "checkpoint-best") if out is not None and (out / "checkpoint-best").is_dir() else None
    t_start = time.perf_counter()
    step = start_step
    status, error = "completed", None
    window_t, window_steps, window_tokens = 0.0, 0, 0
    try:
        while step < t.num_train_steps:
            mx.random.seed(_step_seed(t.seed, step))
            t0 = time.perf_counter()
            grads_acc = None
            loss_sum, aux_sum, z_sum, drop_sum = 0.0, 0.0, 0.0, 0.0
            counts = None
            for _ in range(accum):
                idx = batcher.next_indices(t.batch_size)
                inp, pos, tgt, w, ntok = make_batch([data.train[i] for i in idx], t.max_seq_length,
                                                    data.tokenizer.pad_id, t.pad_to_multiple_of)
                loss, (ce, aux, z, dropped, cnt), grads = micro_c(inp, pos, tgt, w, mx.array(1.0 / accum))
                grads_acc = grads if grads_acc is None else tree_map(mx.add, grads_acc, grads)
                mx.eval(grads_acc, loss, ce, aux, z, dropped, cnt)
                del grads   # only the running sum outlives the micro-batch (memory.py counts two buffers)
                loss_sum += ce.item() / accum
                aux_sum += aux.item() / accum
                z_sum += z.item() / accum
                drop_sum += dropped.item() / accum
                counts = np.array(cnt) if counts is None else counts + np.array(cnt)
                tokens_done += ntok
                window_tokens += ntok
            if not math.isfinite(loss_sum):
                # Before the update: the weights stay those of the last good step.
                raise TrainingDiverged(step + 1, "loss")
            lr = float(lr_at(step, t).item())
            norm = apply_c(grads_acc)
            mx.eval(model.parameters(), optimizer.state, norm)
            step += 1
            dt = time.perf_counter() - t0
            train_time += dt
            window_t += dt
            window_steps += 1
            gn = float(norm.item())
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
            if is_eval and evaluate is not None and data.eval_examples:
                last_eval = evaluate(model, cfg, data, step=step)
                em = last_eval[M.EVAL_EXACT_MATCH]
                improved = em > best_em
                best_em = max(best_em, em)
                rep = {k: v for k, v in last_eval.items() if k != "predictions"}
                if out is not None:   # what was scored, one JSON object per evaluated example
                    _write_predictions(out / f"predictions-step{step}.jsonl", data.eval_examples,
                                       last_eval["predictions"])
                if out is not None and improved:
                    best_path = str(save_checkpoint(
                        out / "checkpoint-best", model=model, config=cfg, tokenizer=data.tokenizer,
                        state=_ck_state(step, batcher, best_em, tokens_done, {"eval": rep})))
                for cb in callbacks:
                    cb.on_eval_report(rep)
            if out is not None and (step % t.save_steps == 0 or step == t.num_train_steps):
                if not _weights_finite(model):   # never overwrite a good checkpoint with NaNs
                    raise TrainingDiverged(step, "a weight")
                ck_state = _ck_state(step, batcher, best_em, tokens_done)
                save_checkpoint(out / "checkpoint-latest", model=model, config=cfg, tokenizer=data.tokenizer,
                                optimizer=optimizer, state=ck_state)
                if step % t.save_steps == 0:
                    save_checkpoint(out / f"checkpoint-{step}", model=model, config=cfg,
                                    tokenizer=data.tokenizer, optimizer=optimizer, state=ck_state)
                    _prune_checkpoints(out, t.save_total_limit)
    except TrainingDiverged as e:
        status, error = "diverged", str(e)
        log.error("%s", e)
        _write_status(out, "diverged", step=e.step, error=str(e))
    except BaseException as e:
        _write_status(out, "failed", step=step, error=f"{type(e).__name__}: {e}"[:500])
        raise
    else:
        _write_status(out, "completed", step=step)
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
        best_checkpoint=best_path, error=error, findings=list(diag.findings),
    )
