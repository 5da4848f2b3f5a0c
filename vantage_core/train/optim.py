"""AdamW with the guide's schedules (cosine/linear/constant, warmup, min_lr_ratio floor)."""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim

from ..config import TrainingConfig


def lr_at(step, t: TrainingConfig):
    """Learning rate at optimizer step `step` (python or mx scalar)."""
    peak, floor = t.learning_rate, t.learning_rate * t.min_lr_ratio
    warm = t.warmup_steps
    decay_steps = max(1, t.num_train_steps - warm)
    s = mx.array(step, dtype=mx.float32)
    warm_lr = peak * mx.minimum(1.0, (s + 1) / max(1, warm)) if warm > 0 else mx.array(peak)
    prog = mx.clip((s - warm) / decay_steps, 0.0, 1.0)
    if t.lr_scheduler_type == "cosine":
        decayed = floor + (peak - floor) * 0.5 * (1 + mx.cos(mx.pi * prog))
    elif t.lr_scheduler_type == "linear":
        decayed = peak - (peak - floor) * prog
    else:
        decayed = mx.array(peak)
    return mx.where(s < warm, warm_lr, decayed)


def make_optimizer(t: TrainingConfig) -> optim.Optimizer:
    # Bias-corrected, as PyTorch's and Hugging Face's AdamW: without it (MLX's default) the
    # first updates are lr*(1-b1)/sqrt(1-b2), 3.2x lr at adam_beta2 0.999, so changing a beta
    # would silently change the early effective learning rate.
    return optim.AdamW(learning_rate=lambda step: lr_at(step, t),
                       betas=[t.adam_beta1, t.adam_beta2], eps=t.adam_epsilon,
                       weight_decay=t.weight_decay, bias_correction=True)
