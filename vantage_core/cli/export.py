"""`vantage-export CHECKPOINT OUT_DIR`: a Hugging Face Mixtral folder from a checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..errors import run_cli


def _main(argv) -> int:
    p = argparse.ArgumentParser(prog="vantage-export",
                                description="Export a Vantage checkpoint as a Hugging Face Mixtral folder "
                                            "(opens with mlx_lm.load and transformers' MixtralForCausalLM).")
    p.add_argument("checkpoint", help="checkpoint folder (e.g. runs/x/checkpoint-best)")
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = p.parse_args(argv)
    from ..weights import export_checkpoint   # MLX: not loaded for --help and usage errors
    out = export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
