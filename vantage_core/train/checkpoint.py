"""One checkpoint format: a folder with model.safetensors (Mixtral parameter names),
optimizer.safetensors, trainer_state.json, config.yaml and tokenizer.json.

Folders are written under a temporary name and renamed into place, so a crash mid-save
never leaves a half-written checkpoint under a final name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from ..config import Config, config_from_dict
from ..errors import CheckpointError

import yaml


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def save_checkpoint(path: str | Path, *, model, config: Config, tokenizer=None, optimizer=None,
                    state: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        if optimizer is not None:
            opt = {k: v for k, v in tree_flatten(optimizer.state) if isinstance(v, mx.array)}
            mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt)
        (tmp / "trainer_state.json").write_text(json.dumps(state or {}, indent=1))
        (tmp / "config.yaml").write_text(config.to_yaml())
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
    except (OSError, RuntimeError) as e:  # disk full, quota, I/O error (MLX raises RuntimeError)
        shutil.rmtree(tmp, ignore_errors=True)
        detail = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise CheckpointError(f"{path}: cannot write checkpoint ({detail}; is the disk full?)") from None
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except OSError as e:  # the previous copy stays under its final or .old name (find_checkpoint)
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot move the checkpoint into place ({e.strerror or e})") from None
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)
    return path


def find_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    # A crash between the two renames leaves only the previous copy, under .old.
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds and (olds[-1] / "model.safetensors").is_file():
        return olds[-1]
    raise CheckpointError(f"{path}: not a Vantage checkpoint (no model.safetensors)")


def load_checkpoint_config(path: str | Path) -> Config:
    path = find_checkpoint(path)
    try:
        return config_from_dict(yaml.safe_load((path / "config.yaml").read_text()), str(path / "config.yaml"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.yaml") from None


def read_safetensors(path: str | Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(path))
    except Exception as e:  # MLX raises RuntimeError/ValueError with multi-line text
        raise CheckpointError(f"{path}: unreadable ({' '.join(str(e).split())})") from None


def load_weights(model, path: str | Path, *, strict: bool = True, seed: int = 0) -> None:
    """Weights from a Vantage checkpoint folder, a Hugging Face Mixtral folder (e.g.
    `vantage-export`'s output, sharded or not, any float dtype) or a dense Llama source (GGUF,
    HF Llama folder, alias), upcycled into the model's experts (`seed` draws the router)."""
    from ..export import is_hf_folder, load_hf_weights
    from ..model import pretrained

    have = dict(tree_flatten(model.parameters()))
    if pretrained.is_dense_source(path):
        weights = pretrained.upcycle(pretrained.load_dense(path), model.cfg, seed=seed)
        path = pretrained.resolve(path)
    elif is_hf_folder(path):
        path = Path(path)
        weights = load_hf_weights(path)
        if "lm_head.weight" in have and "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]   # tied in the source
        weights = {k: v for k, v in weights.items() if k in have}            # e.g. lm_head when we tie
    else:
        path = find_checkpoint(path)
        weights = read_safetensors(path / "model.safetensors")
    for k, v in weights.items():
        if k in have and have[k].shape != v.shape:
            raise CheckpointError(f"{path}: parameter {k} has shape {tuple(v.shape)}, the model "
                                  f"expects {tuple(have[k].shape)} (checkpoint from another model shape)")
    missing = set(have) - set(weights)
    if strict and missing:
        raise CheckpointError(f"{path}: missing parameters, e.g. {sorted(missing)[0]} (checkpoint from another model shape)")
    model.load_weights(list(weights.items()), strict=False)


def load_optimizer(optimizer, path: str | Path) -> None:
    f = find_checkpoint(path) / "optimizer.safetensors"
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (cannot resume optimizer state)")
    optimizer.state = tree_unflatten(list(mx.load(str(f)).items()))


def load_state(path: str | Path) -> dict[str, Any]:
    return json.loads((find_checkpoint(path) / "trainer_state.json").read_text())
