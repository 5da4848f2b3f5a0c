"""AdamW (or Adafactor) with the guide's schedules (cosine/linear/constant, warmup, min_lr_ratio
floor), the schedule built from `mlx.optimizers`' pieces (tests/test_lr_schedule.py: the same
value at every step as the hand-written one it replaced).

Lean-memory keys (docs/training.md "Lean memory"), each a thin subclass of the
`mlx.optimizers` optimizer, whose update math is unchanged and runs in float32:

* ``training.optimizer_state_dtype: bfloat16``: AdamW's m and v (Adafactor's factored
  second moments) are *stored* in bf16 (half the bytes) and upcast to float32 for the update.
* ``training.optimizer: adafactor``: `mlx.optimizers.Adafactor` (factored second moments:
  rows + columns per matrix instead of a full v; no first moment, ``beta_1=None``), with
  ``relative_step=False`` and ``scale_parameter=False`` so the configured schedule is the
  step size it uses (its defaults ignore the learning rate and scale it by each
  parameter's RMS); its weight decay is decoupled (``w -= lr * weight_decay * w``) as AdamW's.
* ``training.master_weights: bfloat16``: the parameters themselves are bf16 (no float32
  master copy). The float32 result of each update is rounded to bf16 *stochastically*
  (`stochastic_round`): plain round-to-nearest drops every update smaller than half a bf16
  ulp of the weight (2^-9 relative), so small learning rates stop training; stochastic
  rounding is unbiased (E[round(x)] = x), so such updates survive on average. Chosen over
  Kahan compensation because it needs no extra per-parameter buffer (Kahan keeps a bf16
  compensation term: +2 B/param, the saving halved).
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.optimizers as optim

from ..config import TrainingConfig

STATE_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16}


def lr_schedule(t: TrainingConfig) -> Callable:
    """`step -> learning rate`: `warmup_steps` linear steps up to the peak (peak/warmup at step
    0, the peak at step warmup-1), then over the remaining num_train_steps - warmup_steps steps
    a cosine or linear decay to `learning_rate * min_lr_ratio`, or the peak held (constant)."""
    peak, floor = t.learning_rate, t.learning_rate * t.min_lr_ratio
    warm = t.warmup_steps
    decay_steps = max(1, t.num_train_steps - warm)
    if t.lr_scheduler_type == "cosine":
        decay = optim.cosine_decay(peak, decay_steps, floor)
    elif t.lr_scheduler_type == "linear":
        decay = optim.linear_schedule(peak, floor, decay_steps)
    else:
        decay = optim.linear_schedule(peak, peak, 1)      # constant
    if warm == 0:
        return decay
    # The warmup fraction ramps 1/warm .. 1 and scales the peak, so each step rounds in float32
    # as peak * fraction did before (step 0 is peak/warm, not below it).
    ramp = optim.linear_schedule(1.0 / warm, 1.0, max(1, warm - 1))
    return optim.join_schedules([lambda step: peak * ramp(step), decay], [warm])


def lr_at(step, t: TrainingConfig):
    """Learning rate at optimizer step `step` (python or mx scalar), an mx float32 scalar."""
    return mx.array(lr_schedule(t)(step), dtype=mx.float32)


def stochastic_round(x: mx.array, dtype=mx.bfloat16) -> mx.array:
    """`x` (float32) rounded to bf16 up or down with probability proportional to its distance
    to each neighbour: add a uniform 16-bit random integer to the float32 bit pattern and
    truncate the low 16 bits (exact in bf16 afterwards). Other dtypes: plain rounding."""
    if dtype != mx.bfloat16:
        return x.astype(dtype)
    bits = mx.view(x.astype(mx.float32), mx.uint32)
    noise = mx.random.randint(0, 1 << 16, x.shape, dtype=mx.uint32)
    rounded = mx.bitwise_and(bits + noise, mx.array(0xFFFF0000, dtype=mx.uint32))
    return mx.view(rounded, mx.float32).astype(mx.bfloat16)


class _LowPrecision:
    """The wrapped optimizer's update in float32: parameters, gradients and state are upcast,
    the state stored back in `state_dtype`, a bf16 parameter rounded stochastically (or to
    nearest with ``stochastic_rounding=False``, the baseline the tests compare against)."""

    state_dtype = mx.float32
    stochastic_rounding = True
    # Uncompiled (training.compile: false): evaluate each tensor's update as it is made, so
    # the float32 working copies of one tensor are alive at a time, not of the whole model
    # (MLX cannot donate a bf16 buffer to a float32 temporary). Inside mx.compile it cannot.
    eval_each = False

    def _state_zeros(self, shape):
        return mx.zeros(shape, dtype=self.state_dtype)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict):
        st = {k: v.astype(mx.float32) for k, v in state.items()}
        new = super().apply_single(gradient.astype(mx.float32), parameter.astype(mx.float32), st)
        for k, v in st.items():
            state[k] = v.astype(self.state_dtype)
        if parameter.dtype != mx.float32:
            new = stochastic_round(new, parameter.dtype) if self.stochastic_rounding else new.astype(parameter.dtype)
        if self.eval_each and (parameter.dtype != mx.float32 or self.state_dtype != mx.float32):
            mx.eval(new, *state.values())
        return new


class LeanAdamW(_LowPrecision, optim.AdamW):
    """`mlx.optimizers.AdamW` with m and v stored in `state_dtype` (bias correction as AdamW's)."""

    def __init__(self, *a, state_dtype=mx.float32, stochastic_rounding: bool = True, **kw):
        super().__init__(*a, **kw)
        self.state_dtype, self.stochastic_rounding = state_dtype, stochastic_rounding

    def init_single(self, parameter: mx.array, state: dict):
        state["m"] = self._state_zeros(parameter.shape)
        state["v"] = self._state_zeros(parameter.shape)


class LeanAdafactor(_LowPrecision, optim.Adafactor):
    """`mlx.optimizers.Adafactor` with its (factored) state stored in `state_dtype`."""

    def __init__(self, *a, state_dtype=mx.float32, stochastic_rounding: bool = True, **kw):
        super().__init__(*a, **kw)
        self.state_dtype, self.stochastic_rounding = state_dtype, stochastic_rounding

    def init_single(self, parameter: mx.array, state: dict):
        super().init_single(parameter, state)
        for k in state:
            state[k] = state[k].astype(self.state_dtype)


def make_optimizer(t: TrainingConfig, *, stochastic_rounding: bool = True) -> optim.Optimizer:
    state_dtype = STATE_DTYPES[t.optimizer_state_dtype]
    opt = _make(t, state_dtype, stochastic_rounding)
    opt.eval_each = not t.compile
    return opt


def _make(t: TrainingConfig, state_dtype, stochastic_rounding: bool) -> optim.Optimizer:
    if t.optimizer == "adafactor":
        return LeanAdafactor(learning_rate=lr_schedule(t), relative_step=False, scale_parameter=False,
                             beta_1=None, weight_decay=t.weight_decay, state_dtype=state_dtype,
                             stochastic_rounding=stochastic_rounding)
    # Bias-corrected, as PyTorch's and Hugging Face's AdamW: without it (MLX's default) the
    # first updates are lr*(1-b1)/sqrt(1-b2), 3.2x lr at adam_beta2 0.999, so changing a beta
    # would silently change the early effective learning rate.
    return LeanAdamW(learning_rate=lr_schedule(t),
                     betas=[t.adam_beta1, t.adam_beta2], eps=t.adam_epsilon,
                     weight_decay=t.weight_decay, bias_correction=True, state_dtype=state_dtype,
                     stochastic_rounding=stochastic_rounding)
