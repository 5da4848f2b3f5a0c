"""Seconds from the start of a GPU call to the end of the first training step.

    VANTAGE_T0=$(date +%s.%N) python bench/first_step.py --config configs/spider_gpu.yaml

Builds the model of --config (random weights), one random batch at the config's batch size
and max_seq_length, and runs the trainer's compiled step (`make_train_step`) twice, printing
the time since VANTAGE_T0 (the call's start; default: this process's start) at the end of
the imports, of step 1 (compilation of every kernel not in MLX's disk cache) and of step 2.
Last line: `first_step_s=X`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

T_PROC = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/spider_gpu.yaml", help="model + training YAML")
    p.add_argument("--device", choices=["cpu", "gpu"], default="gpu", help="MLX device")
    p.add_argument("--seq", type=int, default=0, help="sequence length (default: training.max_seq_length)")
    a = p.parse_args(argv)
    t0 = float(os.environ.get("VANTAGE_T0", T_PROC))
    import mlx.core as mx

    from vantage_core.config import load_config
    from vantage_core.model import MoETransformer
    from vantage_core.train.optim import make_optimizer
    from vantage_core.train.trainer import make_train_step
    mx.set_default_device(mx.gpu if a.device == "gpu" else mx.cpu)
    print(f"imports_s={time.time() - t0:.1f}", flush=True)
    cfg = load_config(a.config)
    B, L, V = cfg.training.batch_size, a.seq or cfg.training.max_seq_length, cfg.model.vocab_size
    model = MoETransformer(cfg.model)
    model.train()
    opt = make_optimizer(cfg.training)
    _, _, step = make_train_step(model, opt, cfg)
    mx.random.seed(0)
    inputs = mx.random.randint(0, V, (B, L)).astype(mx.int32)
    positions = mx.arange(B * L, dtype=mx.int32)
    targets = mx.random.randint(0, V, (B * L,)).astype(mx.int32)
    weights = mx.ones((B * L,), dtype=mx.float32)
    for i in (1, 2):
        out = step(inputs, positions, targets, weights)
        mx.eval(out, model.parameters(), opt.state)
        print(f"step{i}_s={time.time() - t0:.1f} loss={out[0].item():.4f}", flush=True)
        if i == 1:
            first = time.time() - t0
    print(f"first_step_s={first:.1f}")


if __name__ == "__main__":
    main()
