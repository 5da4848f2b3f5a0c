"""Evaluation: during training (`evaluate`, the function `train(..., evaluate=evaluate)` calls
every eval_steps) and of a checkpoint on a data split (`evaluate_checkpoint`, the `vantage-eval`
job)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..blas import load_openblas

load_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

from ..config import Config, load_config  # noqa: E402
from ..data.prepare import PreparedData, prepare_data  # noqa: E402
from ..data.tokenizer import SQLTokenizer  # noqa: E402
from ..errors import CheckpointError, DataError  # noqa: E402
from ..fileio import atomic_write  # noqa: E402
from ..model import build_model  # noqa: E402
from ..sources import find_checkpoint, is_dense_source  # noqa: E402
from ..train import metrics as M  # noqa: E402
from ..train.trainer import make_batch  # noqa: E402
from ..weights import load_checkpoint_config, load_weights  # noqa: E402
from ..sql.execution import valid_sql  # noqa: E402
from .generate import generate_beam_batched, generate_greedy  # noqa: E402
from .metrics import score_examples  # noqa: E402
from .scoring import quick_scores, table_name_sources  # noqa: E402

log = logging.getLogger(__name__)


def evaluate(model, cfg: Config, data: PreparedData, *, step: int = 0) -> dict[str, Any]:
    """Eval loss/perplexity on the eval slice (teacher forced) and greedy-decoded exact match:
    the eval report (train/metrics.py EVAL_REPORT_KEYS) plus "predictions" (the decoded SQL)."""
    model.eval()
    tok = data.tokenizer
    # Teacher-forced loss over the same fixed slice.
    enc = [data.valid_encoded[data.valid.index(e)] for e in data.eval_examples] if data.eval_examples else []
    tot, n = 0.0, 0
    for s in range(0, len(enc), cfg.eval.batch_size):
        inp, pos, tgt, w, _ = make_batch(enc[s: s + cfg.eval.batch_size], 1 << 30, tok.pad_id)
        logits, _ = model(inp, positions=pos)
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), tgt, reduction="none")
        tot += float((ce * w).sum().item())
        n += int(w.sum().item())
    eval_loss = tot / max(1, n)
    outs = generate_greedy(model, data.eval_prompts, pad_id=tok.pad_id, end_id=tok.end_id,
                           max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    preds = [tok.decode_sql(o) for o in outs]
    em, valid = quick_scores(data.eval_examples, preds, data.schemas, data.splits,
                             compare_values=cfg.eval.compare_values, compare_distinct=cfg.eval.compare_distinct)
    src = table_name_sources(preds, [e.db_id for e in data.eval_examples], data.schemas,
                             {e.db_id for e in data.train_examples})
    model.train()
    return {M.STEP: step, M.EVAL_LOSS: eval_loss, M.EVAL_PPL: float(math.exp(min(eval_loss, 50))),
            M.EVAL_EXACT_MATCH: em, M.EVAL_VALID_SQL: valid, M.EVAL_OWN_SCHEMA_TABLES: src["own"],
            "eval/num_examples": len(preds),
            "predictions": preds}


def load_checkpoint_model(path: str | Path, config: str | Path | None = None):
    """(model, config, tokenizer) from a Vantage checkpoint folder, or, zero-shot, from a dense
    pretrained source (alias, GGUF, HF Llama folder) built with `config` (default: the source
    as it is, one expert = its dense FFN)."""
    if is_dense_source(path):
        over = {"model": {"init_from": str(path)}}
        if config is None:
            over["model"].update(num_experts=1, num_experts_per_token=1, expert_capacity=0.0)
        cfg = load_config(config, over)
        tok = SQLTokenizer.from_pretrained(path)
        model = build_model(cfg)
        load_weights(model, path, seed=cfg.training.seed)
        model.eval()
        return model, cfg, tok
    path = find_checkpoint(path)
    cfg = load_checkpoint_config(path)
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise CheckpointError(f"{path}: no tokenizer.json")
    tok = SQLTokenizer.load(tok_file)
    if tok.vocab_size > cfg.model.vocab_size:
        raise CheckpointError(f"{tok_file}: tokenizer has {tok.vocab_size} tokens, the model only "
                              f"{cfg.model.vocab_size} (tokenizer does not match the checkpoint)")
    model = build_model(cfg)
    load_weights(model, path)
    model.eval()
    return model, cfg, tok


@dataclass
class Generation:
    preds: list[str]
    candidates: list[list[str]]
    no_valid_candidate: int
    seconds: float


def generate_sql(model, tok: SQLTokenizer, prompts: list[list[int]], *, num_beams: int = 1,
                 max_new_tokens: int = 128, batch_size: int = 32, validator=None) -> Generation:
    """Greedy (batched) or beam search. With `validator(i, sql) -> bool`, beam search returns the
    first candidate that passes (parses and compiles against the schema); when none does,
    the top beam is kept and counted in `no_valid_candidate` (never counted as valid)."""
    t0 = time.perf_counter()
    cands: list[list[str]] = []
    if num_beams <= 1:
        outs = generate_greedy(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id,
                               max_new_tokens=max_new_tokens, batch_size=batch_size)
        cands = [[tok.decode_sql(o)] for o in outs]
    else:
        beams = generate_beam_batched(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id, num_beams=num_beams,
                                      max_new_tokens=max_new_tokens, batch_size=max(1, batch_size // num_beams))
        cands = [[tok.decode_sql(ids) for ids, _ in bs] for bs in beams]
    preds, none_valid = [], 0
    for i, cs in enumerate(cands):
        if validator is None:
            preds.append(cs[0] if cs else "")
            continue
        pick = next((c for c in cs if c and validator(i, c)), None)
        if pick is None:
            none_valid += 1
            pick = cs[0] if cs else ""
        preds.append(pick)
    return Generation(preds, cands, none_valid, time.perf_counter() - t0)


def evaluate_checkpoint(checkpoint: str | Path, data_dir: str, *, split: str = "dev", num_beams: int = 1,
                        limit: int | None = None, output: str | Path | None = None,
                        pick_valid: bool = True, batch_size: int | None = None, config: str | Path | None = None):
    model, cfg, tok = load_checkpoint_model(checkpoint, config)
    source = str(data_dir)
    if split not in ("dev", "validation"):
        raise DataError(f"--split {split}: choose dev or validation")
    data = prepare_data(cfg, source=source, tokenizer=tok, final_split=split)
    examples, enc = data.valid, data.valid_encoded
    if limit:
        examples, enc = examples[:limit], enc[:limit]
    prompts = [e.ids[: e.sql_start] for e in enc]

    def validator(i, sql):
        ex = examples[i]
        return valid_sql(sql, ex.db_path, data.schemas[ex.db_id])[0]

    gen = generate_sql(model, tok, prompts, num_beams=num_beams, max_new_tokens=cfg.eval.max_new_tokens,
                       batch_size=batch_size or cfg.eval.batch_size, validator=validator if (pick_valid and num_beams > 1) else None)
    golds = [(e.query, e.db_id) for e in examples]
    db_dir = data.splits.root / "database"
    verdicts, summary = score_examples(golds, gen.preds, data.schemas, db_dir if db_dir.is_dir() else None,
                                       compare_values=cfg.eval.compare_values,
                                       compare_distinct=cfg.eval.compare_distinct)
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, "".join(
            json.dumps({"id": e.id, "question": e.question, "db_id": e.db_id, "gold": e.query,
                        "prediction": v["pred"], "candidates": cs,
                        **{k: v[k] for k in ("exact_match", "valid_sql", "execution_match", "hardness")}},
                       ensure_ascii=False) + "\n"
            for e, v, cs in zip(examples, verdicts, gen.candidates)), what="predictions")
    return {"summary": summary, "verdicts": verdicts, "no_valid_candidate": gen.no_valid_candidate,
            "examples": len(examples), "seconds": gen.seconds}
