"""Tiny datasets in each official layout (field names exactly as the releases use them), a
local HTTP server with Range support, and helpers shared by tests/test_data_*.py."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider"


# ------------------------------------------------------------------------------------------
# Spider layout
# ------------------------------------------------------------------------------------------
def make_db(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(script)
    con.commit()
    con.close()
    return path


SHOP_SQL = """
CREATE TABLE shop (shop_id INTEGER PRIMARY KEY, name TEXT, city TEXT, price REAL);
CREATE TABLE staff (staff_id INTEGER PRIMARY KEY, name TEXT, age INTEGER, shop_id INTEGER,
                    FOREIGN KEY (shop_id) REFERENCES shop(shop_id));
INSERT INTO shop VALUES (1,'Alpha','Paris',10.5),(2,'Beta','Rome',20.0),(3,'Gamma','Paris',7.0);
INSERT INTO staff VALUES (1,'Ann',30,1),(2,'Bob',45,1),(3,'Cid',28,2),(4,'Dee',51,3);
"""


def spider_tables_entry(db_id: str, tables: dict[str, list[tuple[str, str]]], pks: list[int],
                        fks: list[list[int]]) -> dict:
    cols_orig = [[-1, "*"]]
    types = ["text"]
    names = list(tables)
    for ti, t in enumerate(names):
        for c, ty in tables[t]:
            cols_orig.append([ti, c])
            types.append(ty)
    return {"db_id": db_id, "table_names_original": names, "table_names": names,
            "column_names_original": cols_orig, "column_names": [[t, c.replace("_", " ")] for t, c in cols_orig],
            "column_types": types, "primary_keys": pks, "foreign_keys": fks}


SHOP_TABLES = {"shop": [("shop_id", "number"), ("name", "text"), ("city", "text"), ("price", "number")],
               "staff": [("staff_id", "number"), ("name", "text"), ("age", "number"), ("shop_id", "number")]}


def write_spider(root: Path, n_train_dbs: int = 4, per_db: int = 6) -> Path:
    """A Spider-layout folder: shop_0..shop_{n-1} (train) + shop_dev (dev), all with files."""
    root.mkdir(parents=True, exist_ok=True)
    dbs = [f"shop_{i}" for i in range(n_train_dbs)] + ["shop_dev"]
    entries = [spider_tables_entry(db, SHOP_TABLES, [1, 5], [[8, 1]]) for db in dbs]
    (root / "tables.json").write_text(json.dumps(entries))
    qs = [("How many shops are there?", "SELECT count(*) FROM shop"),
          ("What are the names of shops in Paris?", "SELECT name FROM shop WHERE city  =  'Paris'"),
          ("List staff older than 29.", "SELECT name FROM staff WHERE age >= 30"),
          ("Which shop has the most staff?",
           "SELECT T1.name FROM shop AS T1 JOIN staff AS T2 ON T1.shop_id = T2.shop_id GROUP BY T1.shop_id "
           "ORDER BY count(*) DESC LIMIT 1"),
          ("Show names of staff in shops priced above 8.",
           "SELECT name FROM staff WHERE shop_id IN (SELECT shop_id FROM shop WHERE price > 8)"),
          ("What is the average age of staff?", "SELECT avg(age) FROM staff")]
    train = [{"db_id": db, "query": q, "question": t} for db in dbs[:-1] for t, q in qs[:per_db]]
    (root / "train_spider.json").write_text(json.dumps(train, indent=1))
    (root / "dev.json").write_text(json.dumps([{"db_id": "shop_dev", "query": q, "question": t} for t, q in qs]))
    for db in dbs:
        make_db(root / "database" / db / f"{db}.sqlite", SHOP_SQL)
    return root


# ------------------------------------------------------------------------------------------
# BIRD layout
# ------------------------------------------------------------------------------------------
def write_bird(root: Path) -> Path:
    for split, dbs in (("train", ["shop_a", "shop_b"]), ("dev", ["shop_c"])):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        recs = []
        for db in dbs:
            recs += [{"db_id": db, "question": "How many shops are in Paris?",
                      "evidence": "Paris refers to city = 'Paris'",
                      "SQL": "SELECT COUNT(*) FROM shop WHERE city = 'Paris'"},
                     {"db_id": db, "question": "Name of the oldest staff member?", "evidence": "",
                      "SQL": "SELECT name FROM staff ORDER BY age DESC LIMIT 1"}]
        if split == "dev":
            for i, r in enumerate(recs):
                r.update(question_id=i, difficulty="simple")
        (d / f"{split}.json").write_text(json.dumps(recs, indent=4))
        (d / f"{split}_tables.json").write_text(json.dumps(
            [spider_tables_entry(db, SHOP_TABLES, [1, [5]], [[8, 1]]) for db in dbs]))
        for db in dbs:
            dbdir = d / f"{split}_databases" / db
            make_db(dbdir / f"{db}.sqlite", SHOP_SQL)
            desc = dbdir / "database_description"
            desc.mkdir()
            (desc / "shop.csv").write_text(
                "original_column_name,column_name,column_description,data_format,value_description\n"
                "shop_id,shop id,the id of the shop,integer,\n"
                "city,city,the city where the shop is,text,\"e.g. Paris, Rome\"\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------------
# WikiSQL layout
# ------------------------------------------------------------------------------------------
WIKI_TABLES = [
    {"id": "1-1000181-1", "header": ["State/territory", "Text/background colour", "Format",
                                     "Current slogan", "Current series", "Notes"],
     "types": ["text", "text", "text", "text", "text", "text"],
     "rows": [["Australian Capital Territory", "blue/white", "Yaa·nna", "ACT · CELEBRATION OF A CENTURY 2013",
               "YIL·00A", "Slogan screenprinted on plate"],
              ["South Australia", "black/white", "Sa·nnn", "SOUTH AUSTRALIA", "S·000·AAA", "No slogan on current series"]],
     "page_title": "Vehicle registration plates of Australia", "caption": "Vehicle registration plates",
     "name": "table_1000181_1"},
    {"id": "1-10015132-11", "header": ["Player", "No.", "Nationality", "Position", "Years in Toronto"],
     "types": ["text", "real", "text", "text", "text"],
     "rows": [["Antonio Lang", 21, "United States", "Guard-Forward", "1999-2000"],
              ["Voshon Lenard", 2, "United States", "Guard", "2002-03"],
              ["Martin Lewis", 32, "United States", "Guard-Forward", "1996-97"]],
     "name": "table_10015132_11"},
]
WIKI_QUESTIONS = [
    {"phase": 1, "table_id": "1-1000181-1", "question": "Tell me what the notes are for South Australia ",
     "sql": {"sel": 5, "conds": [[3, 0, "SOUTH AUSTRALIA"]], "agg": 0}},
    {"phase": 1, "table_id": "1-10015132-11", "question": "How many players wore a number above 10?",
     "sql": {"sel": 0, "conds": [[1, 1, "10"]], "agg": 3}},
    {"phase": 1, "table_id": "1-10015132-11", "question": "What position does number 21 play?",
     "sql": {"sel": 3, "conds": [[1, 0, 21], [2, 0, "united states"]], "agg": 0}},
    {"phase": 2, "table_id": "1-10015132-11", "question": "Highest number of a guard?",
     "sql": {"sel": 1, "conds": [[3, 0, "Guard"]], "agg": 1}},
]


def write_wikisql(root: Path, *, extra_lines: list[str] | None = None) -> Path:
    d = root / "data"
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (d / f"{split}.tables.jsonl").write_text("".join(json.dumps(t) + "\n" for t in WIKI_TABLES))
        lines = [json.dumps(q) for q in WIKI_QUESTIONS]
        if split == "train" and extra_lines:
            lines += extra_lines
        (d / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------------
# Gretel records
# ------------------------------------------------------------------------------------------
def gretel_record(i: int, **over) -> dict:
    r = {"id": 5097 + i, "domain": "forestry", "domain_description": "Comprehensive data on forestry.",
         "sql_complexity": "single join", "sql_complexity_description": "only one join (specify inner, outer, cross)",
         "sql_task_type": "analytics and reporting", "sql_task_type_description": "generating reports, dashboards",
         "sql_prompt": "What is the total volume of timber sold by each salesperson, sorted by salesperson?",
         "sql_context": "CREATE TABLE salesperson (salesperson_id INT, name TEXT, region TEXT); "
                        "INSERT INTO salesperson (salesperson_id, name, region) VALUES (1, 'John Doe', 'North'), "
                        "(2, 'Jane Smith', 'South'); CREATE TABLE timber_sales (sales_id INT, salesperson_id INT, "
                        "volume REAL, sale_date DATE); INSERT INTO timber_sales VALUES (1, 1, 120, '2021-01-01'), "
                        "(2, 1, 150, '2021-02-01'), (3, 2, 180, '2021-01-01');",
         "sql": "SELECT salesperson_id, name, SUM(volume) as total_volume FROM timber_sales JOIN salesperson "
                "ON timber_sales.salesperson_id = salesperson.salesperson_id GROUP BY salesperson_id, name "
                "ORDER BY total_volume DESC;",
         "sql_explanation": "Joins timber_sales and salesperson, sums volume per salesperson."}
    r.update(over)
    return r


def write_gretel(root: Path, n_train: int = 4, n_test: int = 2, extra: list[dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ok = [gretel_record(i, sql="SELECT name, SUM(volume) FROM timber_sales JOIN salesperson ON "
                        "timber_sales.salesperson_id = salesperson.salesperson_id GROUP BY name")
          for i in range(n_train)]
    with (root / "train.jsonl").open("w") as f:
        for r in ok + (extra or []):
            f.write(json.dumps(r) + "\n")
    with (root / "test.jsonl").open("w") as f:
        for i in range(n_test):
            f.write(json.dumps(gretel_record(1000 + i, sql="SELECT COUNT(*) FROM salesperson")) + "\n")
    return root


# ------------------------------------------------------------------------------------------
# archives + HTTP server with Range support
# ------------------------------------------------------------------------------------------
def zip_dir(src: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, f"{prefix}{p.relative_to(src)}")
    return dest


def tar_dir(src: Path, dest: Path, arcname: str, mode: str = "w:bz2") -> Path:
    with tarfile.open(dest, mode) as t:
        t.add(src, arcname=arcname)
    return dest


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range (206) support and records the Range headers it saw."""
    seen: list = []

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        type(self).seen.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)


class LocalServer:
    def __init__(self, directory: Path):
        RangeHandler.seen = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(directory)))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def seen(self):
        return RangeHandler.seen

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
