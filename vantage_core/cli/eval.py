"""vantage-eval: score predictions (Spider exact set match, valid SQL, execution).

    vantage-eval score --gold dev_gold.sql --pred pred.sql --db database/ --tables tables.json \\
                       --out verdicts.jsonl [--compare-values] [--compare-distinct]
    vantage-eval --checkpoint CKPT --data_dir DIR [--split dev] [--num_beams 4] [--limit N] [--output F]

Gold lines are ``SQL<TAB>db_id``, prediction lines are ``SQL`` (same order, one per line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DataError, VantageError, run_cli
from .args import SPELLING_NOTE
from .args import ArgumentParser as _Parser   # one-line usage errors, shown defaults, both spellings


def _score_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vantage-eval score", description="Score predictions against gold SQL.", epilog=SPELLING_NOTE)
    p.add_argument("--gold", required=True, type=Path, help="gold file: SQL<TAB>db_id per line")
    p.add_argument("--pred", required=True, type=Path, help="predictions: one SQL per line, same order")
    p.add_argument("--tables", required=True, type=Path, help="Spider tables.json")
    p.add_argument("--db", type=Path, default=None,
                   help="database folder (DB/DB.sqlite); execution is measured where a file exists "
                        "(default: none, no execution)")
    p.add_argument("--out", type=Path, default=None, help="write one JSON verdict per line here (default: not written)")
    p.add_argument("--compare-values", action="store_true", help="literal values must match too")
    p.add_argument("--compare-distinct", action="store_true", help="DISTINCT must match too")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per query execution")
    return p


def _generate_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vantage-eval", description="Generate SQL with a checkpoint and score it "
                "(use `vantage-eval score ...` to score an existing prediction file).", epilog=SPELLING_NOTE)
    p.add_argument("--checkpoint", required=True,
                   help="a Vantage checkpoint folder (e.g. run/checkpoint-best), or, zero-shot, a pretrained "
                        "source: smollm2-135m, a Llama GGUF file or a Hugging Face Llama folder")
    p.add_argument("--config", default=None,
                   help="with a pretrained source: the config it is built with (prompt format, eval keys); "
                        "default: the source as it is (dense)")
    p.add_argument("--data_dir", required=True,
                   help="data: a Spider-layout folder, spider:PATH, synthetic, or a processed data folder")
    p.add_argument("--split", default="dev", choices=["dev", "validation"],
                   help="dev (final evaluation) or validation (the split carved from training data)")
    p.add_argument("--num_beams", type=int, default=1, help="1 = batched greedy decoding; K > 1 = beam search")
    p.add_argument("--no-pick-valid", action="store_true",
                   help="with beam search, keep the top beam instead of the first candidate that "
                        "parses and compiles against the schema")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples (default: all)")
    p.add_argument("--batch_size", type=int, default=None, help="decoding batch size (default: the config's)")
    p.add_argument("--output", type=Path, default=None,
                   help="per-example JSONL: question, gold, prediction, beam candidates, verdicts "
                        "(default: not written)")
    return p


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: {what} file is a directory") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} file is not UTF-8 ({e.reason})") from None


def read_gold(path: Path) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(_read_lines(path, "gold"), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{n}: expected 'SQL<TAB>db_id'")
        sql, db_id = line.rsplit("\t", 1)
        out.append((sql.strip(), db_id.strip()))
    if not out:
        raise DataError(f"{path}: no gold queries")
    return out


def read_preds(path: Path, golds: list[tuple[str, str]]) -> list[str]:
    lines = _read_lines(path, "prediction")
    while len(lines) > len(golds) and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(golds):
        raise DataError(f"{path}: {len(lines)} predictions for {len(golds)} gold queries (one line each, same order)")
    preds = []
    for line, (_, db_id) in zip(lines, golds):
        if line.endswith("\t" + db_id):  # the official format may carry the db_id too
            line = line[: -len(db_id) - 1]
        preds.append(line.strip())
    return preds


def _cmd_score(args) -> int:
    # Imported per subcommand (pandas, sqlglot, MLX): --help and usage errors stay fast.
    from ..data.readers import load_spider_tables
    from ..eval.metrics import format_summary, score_examples

    golds = read_gold(args.gold)
    preds = read_preds(args.pred, golds)
    schemas = load_spider_tables(args.tables)
    if args.db is not None and not args.db.is_dir():
        raise DataError(f"{args.db}: database folder not found")
    verdicts, summary = score_examples(golds, preds, schemas, args.db, compare_values=args.compare_values,
                                       compare_distinct=args.compare_distinct, timeout_s=args.timeout)
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "w", encoding="utf-8") as f:
                for v in verdicts:
                    f.write(json.dumps(v, ensure_ascii=False) + "\n")
        except OSError as e:
            raise DataError(f"{args.out}: cannot write verdicts ({e.strerror or e})") from None
    print(format_summary(summary))
    if args.out is not None:
        print(f"verdicts: {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------
# generation mode (placeholder hook: the lead fills it in)
# ---------------------------------------------------------------------------------------------
def _cmd_generate(args) -> int:
    """Generate predictions with `args.checkpoint` on `args.data_dir`/`args.split`, then score."""
    from ..eval.evaluate import evaluate_checkpoint
    from ..eval.metrics import format_summary

    if args.num_beams < 1 or (args.limit is not None and args.limit < 1):
        raise VantageError("--num_beams and --limit must be >= 1")
    r = evaluate_checkpoint(args.checkpoint, args.data_dir, split=args.split, num_beams=args.num_beams,
                            limit=args.limit, output=args.output, pick_valid=not args.no_pick_valid,
                            batch_size=args.batch_size, config=args.config)
    print(format_summary(r["summary"]))
    print(f"{r['examples']} examples in {r['seconds']:.1f}s generation "
          f"({r['examples'] / max(r['seconds'], 1e-9):.1f} examples/s)")
    if args.num_beams > 1 and not args.no_pick_valid:
        print(f"no valid beam candidate (fell back to the top beam): {r['no_valid_candidate']}")
    if args.output:
        print(f"predictions: {args.output}")
    return 0


def _main(argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "score":
        return _cmd_score(_score_parser().parse_args(argv[1:]))
    return _cmd_generate(_generate_parser().parse_args(argv))


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
