"""The shipped search spaces. Parameter names are stable: studies depend on them."""

from __future__ import annotations

from vantage_core.config import Config

from .base import GUIDE_LR, LR_MARGIN, Range, SearchSpace, apply_params, model_size


def lr_ranges(base: Config) -> dict[str, Range]:
    lo, hi = GUIDE_LR[model_size(base)]
    return {"learning_rate": Range(lo / LR_MARGIN, hi * LR_MARGIN, log=True)}


# The guide: warmup is typically 1-2% of total steps; searched over that band widened by
# WARMUP_MARGIN on each side (0.5% .. 4%).
GUIDE_WARMUP = (0.01, 0.02)
WARMUP_MARGIN = 2.0


def warmup_ranges(base: Config) -> dict[str, Range]:
    n = base.training.num_train_steps
    lo, hi = GUIDE_WARMUP
    return {"warmup_steps": Range(max(0, int(lo / WARMUP_MARGIN * n)), max(1, int(hi * WARMUP_MARGIN * n)), kind="int")}


def aux_ranges(base: Config) -> dict[str, Range]:
    return {"router_aux_loss_coef": Range(1e-3, 5e-2, log=True)}


def capacity_ranges(base: Config) -> dict[str, Range]:
    return {"expert_capacity": Range(1.0, 2.0)}


def joint_ranges(base: Config) -> dict[str, Range]:
    return {**lr_ranges(base), **warmup_ranges(base), **aux_ranges(base), **capacity_ranges(base)}


def zloss_ranges(base: Config) -> dict[str, Range]:
    return {"router_z_loss_coef": Range(1e-4, 1e-2, log=True)}


def wd_ranges(base: Config) -> dict[str, Range]:
    return {"weight_decay": Range(0.0, 0.3)}


def dropout_ranges(base: Config) -> dict[str, Range]:
    return {"expert_dropout": Range(0.0, 0.3)}


def batch_ranges(base: Config) -> dict[str, Range]:
    # Effective batch = batch_size x gradient_accumulation_steps; the guide recommends 32-64
    # for small/medium. Searched over the per-step batch at fixed accumulation.
    # Large models: the guide's 32-128. The config's own batch is always a choice (baseline).
    acc = base.training.gradient_accumulation_steps
    effective = (16, 32, 64, 128) if model_size(base) == "large" else (8, 16, 32, 64)
    choices = tuple(sorted({max(1, b // acc) for b in effective} | {base.training.batch_size}))
    return {"batch_size": Range(0, 0, kind="categorical", choices=choices)}


def topk_ranges(base: Config) -> dict[str, Range]:
    return {"num_experts_per_token": Range(0, 0, kind="categorical",
                                           choices=tuple(k for k in (1, 2) if k <= base.model.num_experts))}


def upcycle_ranges(base: Config) -> dict[str, Range]:
    # Sparse upcycling's diversity options (model.upcycle_*), around Drop-Upcycling's r = 0.5.
    return {"upcycle_router_init_std": Range(1e-3, 0.1, log=True),
            "upcycle_expert_noise": Range(0.0, 0.05),
            "upcycle_drop_fraction": Range(0.0, 0.5)}


def finetune_ranges(base: Config) -> dict[str, Range]:
    # Fine-tuning a pretrained start (dense or upcycled): lr 3e-5 .. 1e-3, warmup 0-10% of steps.
    n = base.training.num_train_steps
    return {"learning_rate": Range(3e-5, 1e-3, log=True),
            "warmup_steps": Range(0, max(1, n // 10), kind="int")}


def pretrained_ranges(base: Config) -> dict[str, Range]:
    return {**finetune_ranges(base), **aux_ranges(base), **capacity_ranges(base), **upcycle_ranges(base)}


SPACES: dict[str, SearchSpace] = {s.name: s for s in [
    SearchSpace("lr", "learning rate (log), the guide's band per model size widened 2x", lr_ranges, apply_params),
    SearchSpace("warmup", "warmup steps: the guide's 1-2% of num_train_steps widened 2x (0.5-4%)", warmup_ranges, apply_params),
    SearchSpace("aux-loss", "router aux-loss coefficient 0.001-0.05 (log)", aux_ranges, apply_params),
    SearchSpace("capacity", "expert capacity factor 1.0-2.0", capacity_ranges, apply_params),
    SearchSpace("joint", "lr + warmup + aux-loss + capacity together", joint_ranges, apply_params),
    SearchSpace("z-loss", "router z-loss coefficient 1e-4-1e-2 (log)", zloss_ranges, apply_params),
    SearchSpace("weight-decay", "AdamW weight decay 0-0.3", wd_ranges, apply_params),
    SearchSpace("expert-dropout", "expert dropout 0-0.3", dropout_ranges, apply_params),
    SearchSpace("batch-size", "effective batch size 8-64 (large: 16-128; per-step batch at fixed accumulation)", batch_ranges, apply_params),
    SearchSpace("top-k", "experts per token, 1 or 2", topk_ranges, apply_params),
    SearchSpace("upcycle", "upcycling options: router init std, noise on expert copies, Drop-Upcycling share",
                upcycle_ranges, apply_params),
    SearchSpace("finetune", "fine-tuning a pretrained start (dense too): lr 3e-5-1e-3 (log), warmup 0-10%",
                finetune_ranges, apply_params),
    SearchSpace("pretrained", "fine-tuning a pretrained start: lr 3e-5-1e-3 (log), warmup 0-10%, aux-loss, "
                "capacity and the upcycling options", pretrained_ranges, apply_params),
]}
