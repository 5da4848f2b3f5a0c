"""BIRD-SQL loader (the official release layout, unchanged):

    train.json | train/train.json        [{"db_id", "question", "evidence", "SQL"}, ...]
    train_tables.json                     Spider-style schemas
    train_databases/<db>/<db>.sqlite
    train_databases/<db>/database_description/<table>.csv
    dev.json, dev_tables.json, dev_databases/...   (dev also has question_id, difficulty)

The release's folders may be nested one level (``train/``, ``dev/``, ``dev_20240627/``);
`find_bird_parts` looks for them. Column descriptions from ``database_description/*.csv`` are
kept in ``splits.extras["descriptions"][db_id][(table, column)]``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import DataError
from .readers import DatasetSplits, find_layout, load_schema_file, load_spider_like

SPLITS = ("train", "dev")


def find_bird_parts(root: Path) -> dict[str, dict[str, Path]]:
    """{split: {"json", "tables", "databases"}} for the splits present under `root`."""
    root = Path(root)
    parts: dict[str, dict[str, Path]] = {}
    for split in SPLITS:
        cands = [root / f"{split}.json", root / split / f"{split}.json"]
        cands += sorted(root.glob(f"*/{split}.json")) + sorted(root.glob(f"*/*/{split}.json"))
        for c in cands:
            if c.is_file():
                d = c.parent
                parts[split] = {"json": c, "tables": d / f"{split}_tables.json",
                                "databases": d / f"{split}_databases"}
                break
    return parts


def read_descriptions(db_dir: Path) -> dict[tuple[str, str], str]:
    """(table, original_column_name) -> description text from database_description/*.csv."""
    out: dict[tuple[str, str], str] = {}
    ddir = db_dir / "database_description"
    if not ddir.is_dir():
        return out
    for f in sorted(ddir.glob("*.csv")):
        raw = f.read_bytes()
        for enc in ("utf-8-sig", "cp1252", "latin-1"):  # the release mixes encodings
            try:
                text = raw.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        try:
            for row in csv.DictReader(io.StringIO(text)):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
                col = row.get("original_column_name")
                if not col:
                    continue
                desc = row.get("column_description") or row.get("column_name") or ""
                vdesc = row.get("value_description") or ""
                out[(f.stem, col)] = "; ".join(x for x in (desc, vdesc) if x)
        except csv.Error:
            continue
    return out


def load_bird(root: str | Path, *, source: str = "bird", descriptions: bool = True) -> DatasetSplits:
    root, parts = find_layout(root, "BIRD", find_bird_parts, "no train.json or dev.json (expected the BIRD "
                              "layout: train.json, train_tables.json, train_databases/, dev.json, ...)")
    out = DatasetSplits(source, root)
    out.extras["descriptions"] = {}
    for split, p in parts.items():
        if p["tables"].is_file():
            load_schema_file(p["tables"], out)
        else:
            out.skipped.append((str(p["tables"]), "tables file not found (schemas read from databases)"))
        if p["databases"].is_dir():
            for db in sorted(p["databases"].iterdir()):
                f = db / f"{db.name}.sqlite"
                if f.is_file():
                    out.db_paths[db.name] = f
                    if descriptions:
                        out.extras["descriptions"][db.name] = read_descriptions(db)
        elif p["databases"].with_suffix(".zip").is_file():
            raise DataError(f"{p['databases']}.zip is not extracted; run "
                            f"`vantage-data import bird {root}` (it extracts the nested archives)")
        load_spider_like(out, [(p["json"], split)], sql_field="SQL", source=source,
                         db_path=out.db_path, extra_fields=("question_id", "difficulty"))
    return out
