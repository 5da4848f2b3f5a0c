"""Generate SQL with a checkpoint on a data split and score it (the `vantage-eval` job)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..blas import load_openblas

load_openblas()

from ..data.tokenizer import SQLTokenizer  # noqa: E402
from ..errors import CheckpointError, DataError  # noqa: E402

log = logging.getLogger(__name__)


def load_checkpoint_model(path: str | Path, config: str | Path | None = None):
    """(model, config, tokenizer) from a Vantage checkpoint folder, or, zero-shot, from a dense
    pretrained source (alias, GGUF, HF Llama folder) built with `config` (default: the source
    as it is, one expert = its dense FFN)."""
    from ..model import pretrained
    from ..train.checkpoint import find_checkpoint, load_checkpoint_config, load_weights
    from ..train.trainer import build_model

    if pretrained.is_dense_source(path):
        from ..config import load_config
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
    from .generate import generate_beam_batched, generate_greedy

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
    from ..data.prepare import prepare_data
    from ..sql.execution import valid_sql
    from .metrics import score_examples

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
        tmp = out.with_name(f".{out.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e, v, cs in zip(examples, verdicts, gen.candidates):
                f.write(json.dumps({"id": e.id, "question": e.question, "db_id": e.db_id, "gold": e.query,
                                    "prediction": v["pred"], "candidates": cs,
                                    **{k: v[k] for k in ("exact_match", "valid_sql", "execution_match", "hardness")}},
                                   ensure_ascii=False) + "\n")
        tmp.replace(out)
    return {"summary": summary, "verdicts": verdicts, "no_valid_candidate": gen.no_valid_candidate,
            "examples": len(examples), "seconds": gen.seconds}
