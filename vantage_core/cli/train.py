"""`vantage-train` (and `python scripts/train.py`): train one model from a config.

Precedence: config defaults < YAML (--config) < --set section.key=value < the dedicated
flags (--seed, --num_train_steps, --learning_rate, --data_dir). Before any data is loaded
the configuration's peak memory is predicted and a run that cannot fit the device is
refused with a one-line explanation (exit 2); --dry-run prints the prediction and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from ..config import load_config, parse_overrides
from ..data.readers import parse_source
from ..errors import DataError, run_cli
from .args import SPELLING_NOTE, ArgumentParser, check_wandb

log = logging.getLogger("vantage.train")

DEBUG_TRAIN_EXAMPLES = 256
DEBUG_EVAL_EXAMPLES = 16


def build_parser(prog: str = "vantage-train") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog, description="Train a Vantage MoE text-to-SQL model.",
        epilog=SPELLING_NOTE + "\n\nexamples:\n"
               "  vantage-train --config configs/tiny_model.yaml --data_dir synthetic --output_dir runs/tiny\n"
               "  vantage-train --config configs/medium_model.yaml --dry-run\n"
               "  vantage-train --config tiny --data_dir synthetic --output_dir runs/tiny "
               "--resume_from_checkpoint runs/tiny/checkpoint-latest")
    p.add_argument("--config", required=True, metavar="PATH",
                   help="path to a config file, or tiny/small/medium/large (required)")
    p.add_argument("--data_dir", metavar="PATH",
                   help="preprocessed data folder, a Spider-layout folder, 'synthetic', 'spider:PATH' or a mix "
                        "such as 'synthetic+spider:PATH' (default: the config's data.source)")
    p.add_argument("--output_dir", metavar="PATH",
                   help="output directory for checkpoints, logs and metrics (default: checkpoints/<name> for "
                        "--config <name>.yaml, none for tiny/small/medium/large)")
    p.add_argument("--resume_from_checkpoint", metavar="PATH",
                   help="resume from a checkpoint folder (exactly, when it holds optimizer state; "
                        "weights only otherwise, e.g. another run's checkpoint-best)")
    p.add_argument("--wandb_project", metavar="NAME", help="W&B project name (enables W&B logging; checked first: wandb installed, and `wandb login` "
                        "or WANDB_MODE=offline)")
    p.add_argument("--wandb_run_name", metavar="NAME", help="W&B run name")
    p.add_argument("--seed", type=int, metavar="INT", help="random seed (default: the config's, 42)")
    p.add_argument("--debug", action="store_true",
                   help=f"debug mode: train on a small subset ({DEBUG_TRAIN_EXAMPLES} training sequences, "
                        f"{DEBUG_EVAL_EXAMPLES} evaluation examples)")
    p.add_argument("--num_train_steps", type=int, metavar="INT", help="override training.num_train_steps")
    p.add_argument("--learning_rate", type=float, metavar="FLOAT", help="override training.learning_rate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set model.expert_capacity=1.5 (repeatable)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print parameters and predicted peak memory, then exit")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard event files (<output_dir>/logs)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--skip-memory-check", dest="memory_check", action="store_false",
                   help="train even when the predicted peak memory exceeds the device's")
    return p


def resolve(args):
    over = parse_overrides(args.overrides)
    if args.seed is not None:
        over.setdefault("training", {})["seed"] = args.seed
    if args.num_train_steps is not None:
        over.setdefault("training", {})["num_train_steps"] = args.num_train_steps
    if args.learning_rate is not None:
        over.setdefault("training", {})["learning_rate"] = args.learning_rate
    if args.data_dir is not None:
        over.setdefault("data", {})["source"] = data_source(args.data_dir)
    return load_config(args.config, over or None)


def data_source(data_dir: str) -> str:
    """--data_dir -> data.source: 'synthetic' and 'spider:PATH' pass through; a folder
    (processed data or Spider layout) is passed as its absolute path."""
    kind, path = parse_source(data_dir)
    if kind in ("synthetic", "spider") or (":" in data_dir and not path.exists()):
        return data_dir
    return str(path.absolute())


def is_mix(source: str) -> bool:
    return "+" in source and not Path(source).exists()


def prepare_mix(cfg) -> str:
    """A mixed data source, 'synthetic+spider:PATH' (each part: synthetic or spider:PATH), as one
    processed folder: the parts are laid out as `vantage-data preprocess` expects (synthetic/,
    spider/) in the cache and preprocessed once (the same code and cache check as the guide's
    preprocess step); the data.*_weight keys mix them. Returns the processed folder."""
    import hashlib
    import json

    from ..data.prepare import cache_root
    from ..data.preprocess import preprocess
    from ..data.synthetic import generate_synthetic

    d = cfg.data
    parts = [p.strip() for p in d.source.split("+") if p.strip()]
    resolved = []
    for part in parts:
        kind, path = parse_source(part)
        if kind == "synthetic":
            resolved.append(("synthetic", None))
        elif kind == "spider":
            path = path.resolve()
            if not (path / "tables.json").is_file():
                raise DataError(f"data source '{d.source}': {path} is not a Spider folder (no tables.json)")
            resolved.append(("spider", path))
        else:
            raise DataError(f"data source '{d.source}': each part of a mix is 'synthetic' or 'spider:PATH', "
                            f"got '{part}'")
    names = [n for n, _ in resolved]
    if len(set(names)) != len(names):
        raise DataError(f"data source '{d.source}': give each dataset once")
    key = hashlib.sha256(json.dumps([[n, str(p)] for n, p in resolved] + [
        d.seed, d.synthetic_num_databases, d.synthetic_examples_per_db, d.synthetic_name_variation]).encode())
    root = cache_root() / "mix" / key.hexdigest()[:16]
    raw = root / "data"
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in resolved:
        link = raw / name
        if name == "synthetic":
            generate_synthetic(link, num_databases=d.synthetic_num_databases, examples_per_db=d.synthetic_examples_per_db,
                               seed=d.seed, name_variation=d.synthetic_name_variation)
            continue
        if link.is_symlink() and link.resolve() != path:
            link.unlink()
        if not link.exists():
            link.symlink_to(path, target_is_directory=True)
    res = preprocess(cfg, raw, root / "processed", num_workers=d.num_workers)
    log.info("data mix %s: %s (%s)", d.source, res.output_dir, "cached" if res.cached else "preprocessed")
    return str(res.output_dir)


def default_output_dir(config: str) -> Path | None:
    """--output_dir not given: checkpoints/<config file name> for a config file (the guide's
    `--config configs/stage1.yaml` -> ./checkpoints/stage1); None for the shipped names."""
    p = Path(config)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return Path("checkpoints") / p.stem
    return None


def check_data_dir(source: str) -> None:
    kind, path = parse_source(source)
    if kind in ("synthetic", "spider") or path.is_dir():
        return
    raise DataError(f"--data_dir {source}: no such folder (give a processed data folder, a "
                    "Spider-layout folder, 'synthetic' or 'spider:PATH')")


def describe_memory(cfg) -> str:
    from ..model.memory import OVERHEAD, GiB, device_memory_bytes, predict_memory

    p = predict_memory(cfg)
    t = cfg.training
    g = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    return "\n".join([
        f"parameters: total {p['total_params'] / 1e9:.3f}B ({p['total_params']:,}), "
        f"active per token {p['active_params'] / 1e9:.3f}B ({p['active_params']:,})",
        f"predicted peak memory: {g(p['peak'])} for batch {t.batch_size} x {t.max_seq_length} tokens "
        f"({t.mixed_precision}, gradient_checkpointing={str(p['gradient_checkpointing']).lower()}, "
        f"accumulation {t.gradient_accumulation_steps})",
        f"  weights {g(p['weights'])} (master_weights {t.master_weights}), gradients {g(p['gradients'])}, "
        f"{t.optimizer} state {g(p['optimizer'])} ({t.optimizer_state_dtype}), "
        f"activations {g(p['activations'])} (without checkpointing {g(p['activations_no_checkpointing'])}, "
        f"with {g(p['activations_checkpointing'])}), logits {g(p['logits'])}",
        f"  peak = {OVERHEAD:.2f} x max(forward/backward {g(p['forward_backward'])}, "
        f"optimizer step {g(p['optimizer_step'])})",
        f"device memory: {g(device_memory_bytes())}",
    ])


def debug_subset(data):
    n_eval = min(DEBUG_EVAL_EXAMPLES, len(data.eval_examples))
    return dataclasses.replace(data, train=data.train[:DEBUG_TRAIN_EXAMPLES],
                               train_examples=data.train_examples[:DEBUG_TRAIN_EXAMPLES],
                               eval_examples=data.eval_examples[:n_eval], eval_prompts=data.eval_prompts[:n_eval])


def _main(argv, prog: str = "vantage-train") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.wandb_project:
        check_wandb()   # before any work: no data loaded, no output folder created
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    cfg = resolve(args)
    if args.dry_run:
        print(describe_memory(cfg))
        return 0
    from ..model.memory import check_fits, states_fit
    if args.memory_check and not states_fit(cfg):
        check_fits(cfg)   # weights + AdamW alone exceed the device: refuse now, before loading data
    if is_mix(cfg.data.source):
        cfg = cfg.replace(data={"source": prepare_mix(cfg)})
    check_data_dir(cfg.data.source)

    # Imported here, not at the top: --help, --dry-run and argument errors stay fast (no MLX).
    from ..data.prepare import prepare_data
    from ..data.tokenizer import SQLTokenizer
    from ..eval.evaluate import evaluate
    from ..sources import find_checkpoint
    from ..train import callbacks as C
    from ..train.trainer import train
    from ..weights import load_state

    tokenizer = None
    start_step = 0
    if args.resume_from_checkpoint:
        ck = find_checkpoint(args.resume_from_checkpoint)
        if (ck / "tokenizer.json").is_file():
            tokenizer = SQLTokenizer.load(ck / "tokenizer.json")   # token ids must match the weights
        start_step = int(load_state(ck).get("step") or 0) if (ck / "optimizer.safetensors").is_file() else 0
    data = prepare_data(cfg, tokenizer=tokenizer)
    if args.debug:
        data = debug_subset(data)
    log.info("data: %d training sequences, %d evaluation examples (%s)", len(data.train),
             len(data.eval_examples), data.source)
    out = Path(args.output_dir) if args.output_dir else default_output_dir(args.config)
    if out is not None and not args.output_dir:
        log.info("output: %s (--output_dir not given)", out)
    cbs = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cbs.append(C.JSONLSink(out / "metrics.jsonl"))
        if args.tensorboard:
            cbs.append(C.TensorBoardSink(out / "logs"))
    if args.wandb_project:
        cbs.append(C.WandbSink(args.wandb_project, args.wandb_run_name, config=cfg.to_dict(),
                               dir=out))
    if args.progress:
        cbs.append(C.ProgressBar(cfg.training.num_train_steps, start_step=start_step))
    # The full check, at the data's longest padded batch (not max_seq_length), before any step.
    result = train(cfg, data, cbs, evaluate=evaluate, output_dir=out, resume_from=args.resume_from_checkpoint,
                   check_memory=args.memory_check)
    if result.status != "completed":
        print(f"error: {result.error}", file=sys.stderr)
        return 2
    print(f"done: {result.steps} steps, best exact match {result.best_exact_match:.3f}, "
          f"eval loss {result.eval_loss:.4f}, {result.tokens_per_sec:,.0f} tokens/s, "
          f"peak memory {result.peak_memory_bytes / 2**20:.0f} MiB"
          + (f", best checkpoint {result.best_checkpoint}" if result.best_checkpoint else ""))
    return 0


def main(argv=None, prog: str = "vantage-train") -> int:
    return run_cli(lambda a: _main(a, prog), argv)


if __name__ == "__main__":
    sys.exit(main())
