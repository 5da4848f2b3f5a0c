"""Vantage core: config, data, SQL tools, MLX MoE model, trainer and evaluation.

Knows nothing of Optuna; studies/ and runners/ build on
`train(config, data, callbacks, evaluate=eval.evaluate.evaluate)`.
"""
from .blas import load_openblas

load_openblas()  # before anything imports mlx (Linux CPU); a no-op elsewhere

from .config import Config, DataConfig, EvalConfig, ModelConfig, TrainingConfig, load_config
from .errors import ConfigError, DataError, VantageError

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainingConfig", "EvalConfig", "load_config",
           "VantageError", "ConfigError", "DataError"]
