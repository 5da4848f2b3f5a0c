"""Predicted training memory from the config alone, and whether it fits the device.

The model is the one the trainer actually runs (vantage_core/train/trainer.py):

* weights: fp32 master weights (4 B/param); with ``mixed_precision`` bf16/fp16 the
  forward/backward runs on a 2 B/param working copy made inside the step. With
  ``master_weights: bfloat16`` the parameters are bf16 (2 B/param) and there is no copy.
* gradients: in the parameters' dtype (4 or 2 B/param), plus a second buffer of the same
  dtype when gradients are accumulated over micro-batches (``gradient_accumulation_steps >
  1``: the running sum and one micro-batch's gradients; activations of one micro-batch).
* optimizer state, in ``optimizer_state_dtype`` (4 or 2 B/element): AdamW's m and v (2
  elements/param); Adafactor's factored second moments (rows + columns of each matrix, the
  full size of each vector; no first moment).
* activations kept for the backward pass of one micro-batch of ``batch_size`` sequences of
  ``max_seq_length`` tokens, per layer: attention inputs/outputs and q/k/v, the attention
  probabilities (MLX's CPU/VJP path materializes [B, H, L, L] scores and probabilities),
  router logits/probabilities (fp32), and the MoE capacity buffers ([E, C, D] gathered
  inputs, [E, C, F] gate/up/hidden, [E, C, D] outputs) where E*C = capacity_factor * k
  tokens. With ``gradient_checkpointing`` (or ``activation_checkpointing``) only each
  layer's input is kept, plus one layer's full activations while it is recomputed.
* LM head: logits and their fp32 softmax/gradient over the loss positions (all tokens,
  an upper bound; the trainer only projects the SQL positions).

`predict_memory` returns bytes for each part and the total peak; `check_fits` refuses a
configuration whose peak exceeds the device's memory, with the guide's remedies. The
prediction is an estimate (within ~2x of what mx.get_peak_memory() measures on small
models; see docs/training.md), meant to fail fast instead of dying mid-run.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import mlx.core as mx   # vantage_core.model's __init__ has loaded the BLAS first

from ..config import Config
from ..errors import MemoryBudgetError
from .transformer import count_parameters

GiB = 1 << 30
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Allocator slack, temporaries and fragmentation on top of the live tensors.
OVERHEAD = 1.10


def _fused_attention_default() -> bool:
    # MLX's Metal/CUDA attention kernels do not keep the [B, H, L, L] probabilities; the
    # CPU path (and its VJP) materializes them.
    try:
        return mx.default_device().type == mx.gpu
    except Exception:  # pragma: no cover
        return False


def _activation_bytes_per_layer(cfg: Config, tokens: int, seq: int, fused_attention: bool) -> dict:
    m = cfg.model
    b = _BYTES[cfg.training.mixed_precision]
    D, H, KV = m.hidden_size, m.num_attention_heads, m.num_key_value_heads
    hd = D // H
    E, k, F = m.num_experts, m.num_experts_per_token, m.intermediate_size
    if m.moe_impl in ("gather", "sorted"):
        slots = k           # exact per-expert sizes: k rows per token, no padding
    else:
        cf = m.expert_capacity if m.expert_capacity > 0 else E / k
        slots = min(cf * k, E)  # capacity slots per token (E*C / N); never more than E
    attn = (D            # input norm out
            + D + 2 * KV * hd   # q, k, v
            + (2 * H if fused_attention else 2 * H * seq)  # logsumexp, or scores + probabilities
            + D                 # attention output before o_proj
            + D) * b            # residual sum
    router = (D * b         # post-attention norm out
              + 3 * E * 4)  # fp32 logits, probabilities, one-hot
    moe = (slots * (D + 3 * F + D) * b   # gathered inputs, gate, up, silu*up; expert outputs
           + k * D * b                   # per-choice outputs before the weighted sum
           + D * b)                      # residual sum
    drop = 0
    if m.hidden_dropout > 0:
        drop += 2 * D * b
    if m.expert_dropout > 0:
        drop += slots * F * b
    moe_drop = slots * F * b if m.expert_dropout > 0 else 0
    return {"total": int(tokens * (attn + router + moe + drop)),
            "moe": int(tokens * (router + moe + moe_drop - D * b))}


def adafactor_state_elements(m) -> int:
    """Elements of Adafactor's state for the model of ModelConfig `m` (vantage_core/model's
    parameter shapes): a tensor [..., r, c] keeps [..., r] + [..., c], a vector its full size."""
    D, H, KV, E, F, V = (m.hidden_size, m.num_attention_heads, m.num_key_value_heads,
                         m.num_experts, m.intermediate_size, m.vocab_size)
    hd = D // H
    attn = (H * hd + D) * 2 + (KV * hd + D) * 2            # q, o; k, v
    experts = 3 * E * (F + D)                                # gate/up [E, F, D], down [E, D, F]
    per_layer = attn + experts + (E + D) + 2 * D             # router [E, D], two norms
    tables = (V + D) * (1 if m.tie_word_embeddings else 2)
    return m.num_layers * per_layer + tables + D


def state_bytes(cfg: Config) -> dict[str, int]:
    """Bytes of the weights, gradients and optimizer state (no activations) for `cfg`."""
    m, t = cfg.model, cfg.training
    P = count_parameters(m)["total"]
    b = _BYTES[t.mixed_precision]
    w = _BYTES["bf16"] if t.master_weights == "bfloat16" else 4
    weights = w * P + (b * P if b != w else 0)            # masters (+ compute copy)
    gradients = w * P * (2 if t.gradient_accumulation_steps > 1 else 1)
    s = 2 if t.optimizer_state_dtype == "bfloat16" else 4
    elems = adafactor_state_elements(m) if t.optimizer == "adafactor" else 2 * P
    return {"weights": int(weights), "gradients": int(gradients), "optimizer": int(s * elems),
            "masters": int(w * P), "gradient_buffer": int(w * P)}


def largest_parameter(m) -> int:
    """Elements of the model's largest parameter tensor (embedding/LM head or one expert stack)."""
    return max(m.vocab_size * m.hidden_size, m.num_experts * m.intermediate_size * m.hidden_size)


def predict_memory(cfg: Config, *, fused_attention: Optional[bool] = None,
                   seq_length: Optional[int] = None) -> dict[str, Any]:
    """Bytes of each part of the training peak for `cfg` (one micro-batch of batch_size x
    max_seq_length, or x `seq_length` when the data's longest padded batch is known: the
    trainer pads each batch to its own longest sequence, not to max_seq_length), plus
    parameter counts. Keys: total_params, active_params, weights, gradients, optimizer,
    activations, activations_no_checkpointing, activations_checkpointing, logits, peak,
    gradient_checkpointing, tokens_per_micro_batch, seq_length."""
    m, t = cfg.model, cfg.training
    params = count_parameters(m)
    P = params["total"]
    b = _BYTES[t.mixed_precision]
    st = state_bytes(cfg)
    weights, gradients, optimizer = st["weights"], st["gradients"], st["optimizer"]
    seq = min(t.max_seq_length, seq_length) if seq_length else t.max_seq_length
    tokens = t.batch_size * seq
    fused = _fused_attention_default() if fused_attention is None else fused_attention
    parts = _activation_bytes_per_layer(cfg, tokens, seq, fused)
    per_layer = parts["total"]
    act_full = m.num_layers * per_layer
    act_ckpt = m.num_layers * tokens * m.hidden_size * b + per_layer
    # activation_checkpointing alone: each layer keeps all but its MoE buffers.
    act_moe = m.num_layers * (per_layer - parts["moe"]) + parts["moe"]
    ckpt = t.gradient_checkpointing or t.activation_checkpointing
    if t.gradient_checkpointing:
        activations = act_ckpt
    elif t.activation_checkpointing:
        activations = act_moe
    else:
        activations = act_full
    # LM head over the loss positions (bounded by all tokens): logits, fp32 softmax, gradient;
    # with training.loss_chunk_rows, one chunk's worth is alive at a time.
    rows = min(tokens, t.loss_chunk_rows) if t.loss_chunk_rows else tokens
    logits = rows * m.vocab_size * (b + 4 + 4)
    # The optimizer step (after the backward pass; no activations, one gradient buffer). The
    # compiled update (training.compile) writes new parameters and new state while the old are
    # still held by the model and the optimizer (no buffer donation): masters + state twice.
    # Uncompiled, a float32 update donates the old buffers (in place); a bf16 one (train/optim.py
    # evaluates it tensor by tensor) keeps the old parameters until the model takes the new.
    # A float32 update of bf16 state or weights upcasts parameter, gradient, m and v of one
    # tensor at a time: 4 float32 copies of the largest. (Measured: docs/training.md.)
    masters = st["masters"]
    update = masters + st["gradient_buffer"] + optimizer
    lean = t.master_weights != "float32" or t.optimizer_state_dtype != "float32"
    if t.compile:
        update += masters + optimizer
    elif lean:
        update += masters
    if lean:
        update += 4 * 4 * largest_parameter(m)
    train_peak = weights + gradients + optimizer + activations + logits
    peak = int(OVERHEAD * max(train_peak, update))
    return {
        "total_params": P,
        "active_params": params["active"],
        "weights": int(weights),
        "gradients": int(gradients),
        "optimizer": int(optimizer),
        "activations": int(activations),
        "activations_no_checkpointing": int(act_full),
        "activations_checkpointing": int(act_ckpt),
        "logits": int(logits),
        "forward_backward": int(train_peak),
        "optimizer_step": int(update),
        "peak": peak,
        "gradient_checkpointing": bool(ckpt),
        "fused_attention": bool(fused),
        "tokens_per_micro_batch": tokens,
        "seq_length": seq,
        "mixed_precision": t.mixed_precision,
        "optimizer_name": t.optimizer,
        "optimizer_state_dtype": t.optimizer_state_dtype,
        "master_weights": t.master_weights,
    }


def _cgroup_limit() -> Optional[int]:
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            s = open(f).read().strip()
        except OSError:
            continue
        if s.isdigit() and int(s) < (1 << 60):
            return int(s)
    return None


def device_memory_bytes() -> int:
    """Memory the training process can use: on Metal/GPU the device's recommended maximum
    working set; on CPU the physical RAM (or the cgroup limit when lower).
    ``VANTAGE_DEVICE_MEMORY`` (bytes, or with a GiB/GB suffix) overrides it."""
    env = os.environ.get("VANTAGE_DEVICE_MEMORY")
    if env:
        s = env.strip().lower()
        for suf, mul in (("gib", GiB), ("gb", 10 ** 9), ("g", GiB)):
            if s.endswith(suf):
                return int(float(s[: -len(suf)]) * mul)
        return int(float(s))

    if mx.default_device().type == mx.gpu:
        try:
            info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
        except Exception:
            info = {}
        for key in ("max_recommended_working_set_size", "memory_size", "total_memory"):
            if info.get(key):
                return int(info[key])
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cg = _cgroup_limit()
    return int(min(ram, cg) if cg else ram)


def _gib(x: float) -> str:
    return f"{x / GiB:.1f} GiB"


def states_fit(cfg: Config, *, limit_bytes: Optional[int] = None) -> bool:
    """Whether weights, gradients and AdamW state alone (no activations) fit: the lower
    bound any batch needs, known before the data is loaded."""
    pred = predict_memory(cfg, seq_length=1)
    limit = int(limit_bytes if limit_bytes is not None else device_memory_bytes())
    return (pred["weights"] + pred["gradients"] + pred["optimizer"]) * OVERHEAD <= limit


def check_fits(cfg: Config, *, limit_bytes: Optional[int] = None,
               fused_attention: Optional[bool] = None, seq_length: Optional[int] = None) -> dict[str, Any]:
    """Raise MemoryBudgetError (one line) when the predicted peak exceeds the device memory
    (`limit_bytes`, default `device_memory_bytes()`); returns the prediction otherwise.
    `seq_length`: the longest padded training sequence (default max_seq_length)."""
    pred = predict_memory(cfg, fused_attention=fused_attention, seq_length=seq_length)
    limit = int(limit_bytes if limit_bytes is not None else device_memory_bytes())
    if pred["peak"] <= limit:
        return pred
    t = cfg.training
    remedies = []
    if t.batch_size > 1:
        remedies.append(f"training.batch_size={max(1, t.batch_size // 2)} with "
                        f"training.gradient_accumulation_steps={t.gradient_accumulation_steps * 2}")
    if not cfg.training.gradient_checkpointing:
        remedies.append("training.gradient_checkpointing=true")
    if t.mixed_precision == "fp32":
        remedies.append("training.mixed_precision=bf16")
    if pred["seq_length"] > 256:
        remedies.append(f"training.max_seq_length={pred['seq_length'] // 2}")
    lean = {}
    if t.master_weights != "bfloat16" and t.mixed_precision == "bf16":
        lean["master_weights"] = "bfloat16"
    if t.optimizer_state_dtype != "bfloat16":
        lean["optimizer_state_dtype"] = "bfloat16"
    if t.optimizer != "adafactor":
        lean["optimizer"] = "adafactor"
    for key, value in lean.items():   # the lean-memory keys (docs/training.md), each with its peak
        alt = predict_memory(cfg.replace(training={key: value}), fused_attention=fused_attention,
                             seq_length=seq_length)["peak"]
        if alt < 0.95 * pred["peak"]:
            remedies.append(f"training.{key}={value} ({_gib(alt)})")
        else:
            lean[key] = None
    lean = {k: v for k, v in lean.items() if v is not None}
    states = pred["weights"] + pred["gradients"] + pred["optimizer"]
    detail = (f"{pred['total_params'] / 1e9:.2f}B params: weights+gradients+{t.optimizer} "
              f"{_gib(states)}, activations {_gib(pred['activations'])}, logits {_gib(pred['logits'])}")
    if states * OVERHEAD > limit:
        hint = ("the model's weights and optimizer state alone exceed it: use a smaller model config"
                + (" or " + ", ".join(r for r in remedies if r.split("=")[0].split(".")[1] in lean)
                   if lean else ""))
    else:
        hint = "try " + ", ".join(remedies) if remedies else "use a smaller model config"
    raise MemoryBudgetError(
        f"predicted peak memory {_gib(pred['peak'])} > available {_gib(limit)} "
        f"(batch {t.batch_size} x {pred['seq_length']} tokens, {t.mixed_precision}; {detail}); {hint}")


_FLOPS_CACHE: dict[str, float] = {}


def device_flops(*, n: int = 512, repeats: int = 8) -> float:
    """Measured float32 matmul FLOP/s of the default MLX device (once per process, ~0.1 s)."""
    key = str(mx.default_device())
    if key not in _FLOPS_CACHE:
        a = mx.random.normal((n, n))
        mx.eval(a @ a)
        t0 = time.perf_counter()
        for _ in range(repeats):
            mx.eval(a @ a)
        _FLOPS_CACHE[key] = 2 * n ** 3 * repeats / max(time.perf_counter() - t0, 1e-9)
    return _FLOPS_CACHE[key]


def predict_time(cfg: Config, *, flops: Optional[float] = None, efficiency: float = 0.25) -> dict[str, Any]:
    """Predicted training time (an upper bound: every sequence at max_seq_length).

    FLOPs per token: 6 x active parameters (forward + backward) plus attention scores
    (12 x layers x seq x hidden); the device rate is measured, and `efficiency` is the share
    of it a real training step reaches (small MoE layers and routing do not run at matmul
    speed)."""
    m, t = cfg.model, cfg.training
    # The input embedding is a lookup, not a matmul.
    active = count_parameters(m)["active"] - m.vocab_size * m.hidden_size
    seq = t.max_seq_length
    tokens_per_step = t.batch_size * t.gradient_accumulation_steps * seq
    per_token = 6 * active + 12 * m.num_layers * seq * m.hidden_size
    rate = (flops or device_flops()) * efficiency
    step_s = per_token * tokens_per_step / rate
    return {"flops_per_step": per_token * tokens_per_step, "step_s": step_s,
            "total_s": step_s * t.num_train_steps, "device_flops": rate / efficiency}
