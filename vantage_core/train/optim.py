"""AdamW with the guide's schedules (cosine/linear/constant, warmup, min_lr_ratio floor), the
schedule built from `mlx.optimizers`' pieces (tests/test_lr_schedule.py: the same value at
every step as the hand-written one it replaced)."""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.optimizers as optim

from ..config import TrainingConfig


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


def make_optimizer(t: TrainingConfig) -> optim.Optimizer:
    # Bias-corrected, as PyTorch's and Hugging Face's AdamW: without it (MLX's default) the
    # first updates are lr*(1-b1)/sqrt(1-b2), 3.2x lr at adam_beta2 0.999, so changing a beta
    # would silently change the early effective learning rate.
    return optim.AdamW(learning_rate=lr_schedule(t),
                       betas=[t.adam_beta1, t.adam_beta2], eps=t.adam_epsilon,
                       weight_decay=t.weight_decay, bias_correction=True)
