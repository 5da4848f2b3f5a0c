"""Shared tiny set-up for the trainer tests (2 layers, 4 experts, hidden 64, a small
synthetic dataset, cheap evaluation); the prepared data is built once per session."""

import functools

import mlx.core as mx
import numpy as np

from vantage_core.config import load_config

SMALL_DATA = {"synthetic_num_databases": 6, "synthetic_examples_per_db": 60, "max_eval_examples": 2}
CHEAP_EVAL = {"max_new_tokens": 8, "batch_size": 4}
FAST_TRAIN = {"batch_size": 4, "warmup_steps": 2, "eval_steps": 1000, "save_steps": 1000,
              "logging_steps": 1, "max_seq_length": 384}


def tiny_cfg(training=None, model=None, data=None):
    return load_config("tiny", {"training": {**FAST_TRAIN, **(training or {})},
                                "model": dict(model or {}),
                                "data": {**SMALL_DATA, **(data or {})}, "eval": CHEAP_EVAL})


@functools.lru_cache(maxsize=1)
def tiny_data():
    from vantage_core.data.prepare import prepare_data
    return prepare_data(tiny_cfg())


def batch(n=4, start=0, max_len=384):
    from vantage_core.train.trainer import make_batch
    d = tiny_data()
    return make_batch(d.train[start:start + n], max_len, d.tokenizer.pad_id)


def max_abs_diff(a, b):
    from mlx.utils import tree_flatten
    fa, fb = dict(tree_flatten(a)), dict(tree_flatten(b))
    assert fa.keys() == fb.keys()
    return max(float(mx.max(mx.abs(fa[k].astype(mx.float32) - fb[k].astype(mx.float32)))) for k in fa)


def losses(history):
    return np.array([h["train/loss"] for h in history])
