"""Bad input through the real CLIs (vantage-sweep, vantage-train, vantage-eval, vantage-data), each
in its own process: a one-line `error: ...` with exit code 2, no traceback, and no existing file
changed (the study DB, a real checkpoint, the config and dataset files are hashed before and
after every case) and no new file written outside the case's own folder.

Decision recorded here and in docs/reliability.md: `model.expert_capacity: 0` means "no capacity
limit" (by design, no token is dropped); a negative capacity is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODULES = {"vantage-sweep": "studies", "vantage-train": "vantage_core.cli.train",
           "vantage-eval": "vantage_core.cli.eval", "vantage-data": "vantage_core.cli.data"}
FAKE = ["--objective-fn", "runners.fake_objective:quadratic"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def run(cli: str, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = BIN / cli
    cmd = [str(exe), *args] if exe.is_file() else [sys.executable, "-m", MODULES[cli], *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def tree_hashes(root: Path, skip: Path | None = None) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def assert_one_line_error(r: subprocess.CompletedProcess, needle: str) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    other = [ln for ln in lines if not ln.startswith("error: ") and not LOG_LINE.match(ln)]
    assert len(errors) == 1 and not other, r.stderr[-3000:]
    assert lines[-1] == errors[0]
    assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]


# ---------------------------------------------------------------------------------------------
# The workspace every case must leave untouched: a study, a real checkpoint, configs, a dataset
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("bad-input")
    r = run("vantage-sweep", ["lr", "--model", "tiny", "--trials", "2", *FAKE, "--storage",
                              f"sqlite:///{ws}/studies.db", "--out", str(ws / "sweeps")], ws)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("vantage-train", ["--config", "tiny", "--data_dir", "synthetic", "--output_dir", str(ws / "run"),
                              "--num_train_steps", "1", "--set", "training.save_steps=1", "--set",
                              "training.eval_steps=1", "--set", "data.max_eval_examples=4", "--set",
                              "eval.max_new_tokens=8", "--no-progress", "--no-tensorboard"], ws)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (ws / "run" / "checkpoint-latest" / "model.safetensors").is_file()
    shutil.copyfile(ROOT / "configs" / "tiny_model.yaml", ws / "good.yaml")
    from vantage_core.data.synthetic import generate_synthetic
    generate_synthetic(ws / "mini", num_databases=4, examples_per_db=8, num_dev_databases=1, seed=0)
    assert (ws / "mini" / "tables.json").is_file()
    return ws


# ---------------------------------------------------------------------------------------------
# Case set-ups: write the bad input into the case's own folder `c` (ws is read-only to them)
# ---------------------------------------------------------------------------------------------
def yaml_file(text: str | bytes):
    def setup(ws: Path, c: Path):
        p = c / "bad.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def ranges_file(text: str):
    def setup(ws: Path, c: Path):
        (c / "ranges.yaml").write_text(text)
    return setup


def dataset(mutate):
    """A copy of the mini Spider-layout dataset, then `mutate(folder)`."""
    def setup(ws: Path, c: Path):
        shutil.copytree(ws / "mini", c / "data")
        mutate(c / "data")
    return setup


def _train_file(d: Path) -> Path:
    return next(p for p in (d / "train_spider.json", d / "train.json") if p.is_file())


def truncate_json(d: Path):
    f = _train_file(d)
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])


def latin1_json(d: Path):
    f = _train_file(d)
    rows = json.loads(f.read_text())
    rows[0]["question"] = "Quelle ann\u00e9e ?"
    f.write_bytes(json.dumps(rows, ensure_ascii=False).encode("latin-1"))


def no_tables(d: Path):
    (d / "tables.json").unlink()


def tables_not_a_list(d: Path):
    (d / "tables.json").write_text("5")


def no_examples(d: Path):
    for name in ("train_spider.json", "train_others.json", "train.json", "dev.json"):
        (d / name).unlink(missing_ok=True)


def checkpoint_copy(mutate):
    def setup(ws: Path, c: Path):
        shutil.copytree(ws / "run" / "checkpoint-latest", c / "ck")
        mutate(c / "ck")
    return setup


def other_shape(ck: Path):
    text = (ck / "config.yaml").read_text()
    (ck / "config.yaml").write_text(text.replace("num_experts: 4", "num_experts: 8"))


def big_tokenizer(ck: Path):
    from tokenizers import Tokenizer, models

    from vantage_core.data.tokenizer import SPECIAL_TOKENS
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": len(SPECIAL_TOKENS) + i for i in range(3000)})
    vocab["[UNK]"] = len(vocab)
    Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(str(ck / "tokenizer.json"))


def tokenizer_without_specials(ck: Path):
    from tokenizers import Tokenizer, models
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(ck / "tokenizer.json"))


def truncated_weights(ck: Path):
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])


def gold_pred(gold: bytes, pred: bytes):
    def setup(ws: Path, c: Path):
        (c / "gold.sql").write_bytes(gold)
        (c / "pred.sql").write_bytes(pred)
    return setup


def nothing(ws: Path, c: Path):
    pass


STORE = ["--storage", "sqlite:///{ws}/studies.db", "--out", "{ws}/sweeps"]
SW = ["lr", "--model", "tiny", *FAKE]
SPIDER_TABLES = "{ws}/mini/tables.json"

# id: (cli, args, expected text in the error line, set-up)
CASES = {
    # --- configs: malformed, unknown keys at every level, wrong types, bad sizes ------------------
    "yaml-malformed": ("vantage-sweep", ["lr", "--model", "{c}/bad.yaml", *STORE], "malformed YAML",
                       yaml_file("model:\n  hidden_size: 64\n   bad: indent\n")),
    "yaml-tab-garbage": ("vantage-sweep", ["lr", "--model", "{c}/bad.yaml", *STORE], "malformed YAML",
                         yaml_file("model: {hidden_size: [64\n")),
    "yaml-top-level-list": ("vantage-sweep", ["lr", "--model", "{c}/bad.yaml", *STORE], "top level must be a mapping",
                            yaml_file("- model\n- data\n")),
    "yaml-not-utf8": ("vantage-sweep", ["lr", "--model", "{c}/bad.yaml", *STORE], "not UTF-8",
                      yaml_file(b"model:\n  hidden_size: 64 # \xe9t\xe9\xff\n")),
    "unknown-section": ("vantage-sweep", ["lr", "--model", "{c}/bad.yaml", *STORE], "unknown key 'trainig'",
                        yaml_file("trainig:\n  batch_size: 4\n")),
    "unknown-model-key": ("vantage-sweep", ["lr", "--model", "{c}/bad.yaml", *STORE], "model.hiden_size",
                          yaml_file("model:\n  hiden_size: 64\n")),
    "unknown-data-key": ("vantage-train", ["--config", "{c}/bad.yaml", "--dry-run"], "data.sorce",
                         yaml_file("data:\n  sorce: synthetic\n")),
    "unknown-training-key-set": ("vantage-sweep", [*SW, "--set", "training.lr=1e-3", *STORE], "training.lr", nothing),
    "unknown-eval-key": ("vantage-train", ["--config", "{c}/bad.yaml", "--dry-run"], "eval.beams",
                         yaml_file("eval:\n  beams: 4\n")),
    "unknown-override-section": ("vantage-train", ["--config", "tiny", "--set", "optim.lr=1", "--dry-run"],
                                 "unknown section 'optim'", nothing),
    "override-without-section": ("vantage-sweep", [*SW, "--set", "learning_rate=1", *STORE],
                                 "expected section.key=value", nothing),
    "section-not-mapping": ("vantage-train", ["--config", "{c}/bad.yaml", "--dry-run"], "'model' must be a mapping",
                            yaml_file("model: [1, 2]\n")),
    "wrong-type-int": ("vantage-sweep", [*SW, "--set", "training.batch_size=sixteen", *STORE],
                       "training.batch_size", nothing),
    "wrong-type-float-int": ("vantage-train", ["--config", "tiny", "--set", "training.batch_size=3.5", "--dry-run"],
                             "training.batch_size", nothing),
    "wrong-type-bool": ("vantage-sweep", [*SW, "--set", "model.tie_word_embeddings=3", *STORE],
                        "model.tie_word_embeddings", nothing),
    "wrong-type-literal": ("vantage-train", ["--config", "tiny", "--set", "training.mixed_precision=fp8", "--dry-run"],
                           "training.mixed_precision", nothing),
    "nan-learning-rate": ("vantage-sweep", [*SW, "--set", "training.learning_rate=.nan", *STORE],
                          "finite", nothing),
    "zero-hidden-size": ("vantage-sweep", [*SW, "--set", "model.hidden_size=0", *STORE], "model.hidden_size", nothing),
    "negative-batch-size": ("vantage-train", ["--config", "tiny", "--set", "training.batch_size=-4", "--dry-run"],
                            "training.batch_size", nothing),
    "zero-experts": ("vantage-sweep", [*SW, "--set", "model.num_experts=0", *STORE], "model.num_experts", nothing),
    "zero-steps": ("vantage-train", ["--config", "tiny", "--num_train_steps", "0", "--dry-run"],
                   "training.num_train_steps", nothing),
    "negative-steps-per-trial": ("vantage-sweep", [*SW, "--steps-per-trial", "-3", *STORE], "--steps-per-trial", nothing),
    "zero-trials": ("vantage-sweep", [*SW, "--trials", "0", *STORE], "--trials", nothing),
    "top-k-above-experts": ("vantage-sweep", [*SW, "--set", "model.num_experts_per_token=6", *STORE],
                            "num_experts_per_token", nothing),
    "negative-capacity": ("vantage-sweep", [*SW, "--set", "model.expert_capacity=-0.5", *STORE],
                          "model.expert_capacity", nothing),
    "validation-fraction-1": ("vantage-train", ["--config", "tiny", "--set", "data.validation_fraction=1.5", "--dry-run"],
                              "data.validation_fraction", nothing),
    "dropout-1": ("vantage-sweep", [*SW, "--set", "model.expert_dropout=1", *STORE], "model.expert_dropout", nothing),
    "heads-not-dividing": ("vantage-train", ["--config", "tiny", "--set", "model.num_attention_heads=3", "--dry-run"],
                           "num_attention_heads", nothing),
    "seq-beyond-positions": ("vantage-sweep", [*SW, "--set", "training.max_seq_length=4096", *STORE],
                             "max_position_embeddings", nothing),
    "config-not-found": ("vantage-sweep", ["lr", "--model", "{c}/nosuch.yaml", *STORE], "nosuch.yaml", nothing),
    # --- search spaces ---------------------------------------------------------------------------
    "ranges-low-above-high": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "low=",
                              ranges_file("learning_rate: {low: 1.0e-2, high: 1.0e-4, log: true}\n")),
    "ranges-log-nonpositive": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "log-scaled",
                               ranges_file("learning_rate: {low: 0, high: 1.0e-2, log: true}\n")),
    "ranges-unknown-parameter": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE],
                                 "unknown parameter 'lrate'", ranges_file("lrate: {low: 1.0e-4, high: 1.0e-2}\n")),
    "ranges-unknown-field": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "unknown field",
                             ranges_file("learning_rate: {low: 1.0e-4, hi: 1.0e-2}\n")),
    "ranges-not-numbers": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "must be numbers",
                           ranges_file("learning_rate: {low: small, high: 1.0e-2}\n")),
    "ranges-malformed-yaml": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "cannot read ranges",
                              ranges_file("learning_rate: {low: 1\n")),
    "ranges-not-mapping": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "expected a mapping",
                           ranges_file("- 1\n- 2\n")),
    "ranges-infinite": ("vantage-sweep", [*SW, "--ranges", "{c}/ranges.yaml", *STORE], "finite",
                        ranges_file("learning_rate: {low: 1.0e-4, high: .inf}\n")),
    # --- names ----------------------------------------------------------------------------------
    "unknown-sampler": ("vantage-sweep", [*SW, "--sampler", "bogus", *STORE], "unknown sampler", nothing),
    "unknown-pruner": ("vantage-sweep", [*SW, "--pruner", "bogus", *STORE], "unknown pruner", nothing),
    "unknown-sweep": ("vantage-sweep", ["learning-rate", "--model", "tiny", *STORE], "unknown sweep", nothing),
    "unknown-objective": ("vantage-sweep", [*SW, "--objectives", "accuracy", *STORE], "unknown objective", nothing),
    "unknown-data-command": ("vantage-data", ["fetch"], "unknown command", nothing),
    # --- storage ----------------------------------------------------------------------------------
    "storage-not-a-url": ("vantage-sweep", [*SW, "--storage", "notaurl", "--out", "{c}"], "not a storage URL", nothing),
    "storage-unsupported-scheme": ("vantage-sweep", [*SW, "--storage", "redis://127.0.0.1/0", "--out", "{c}"],
                                   "unsupported scheme", nothing),
    "storage-unreachable-pg": ("vantage-sweep", [*SW, "--storage", "postgresql://nobody@127.0.0.1:1/none",
                                                 "--out", "{c}"], "cannot connect", nothing),
    "storage-unreachable-mysql": ("vantage-sweep", [*SW, "--storage", "mysql+pymysql://nobody@127.0.0.1:1/none",
                                                    "--out", "{c}"], "cannot connect", nothing),
    "storage-sqlite-no-folder": ("vantage-sweep", [*SW, "--storage", "sqlite:///{c}/nope/x.db", "--out", "{c}"],
                                 "does not exist", nothing),
    "storage-journal-no-folder": ("vantage-sweep", [*SW, "--storage", "journal:{c}/nope/j.log", "--out", "{c}"],
                                  "does not exist", nothing),
    "status-unreachable": ("vantage-sweep", ["status", "--storage", "postgresql://nobody@127.0.0.1:1/none"],
                           "cannot connect", nothing),
    "report-unknown-study": ("vantage-sweep", ["report", "no-such-study", "--storage", "sqlite:///{ws}/studies.db",
                                               "--out", "{c}/r"], "not found", nothing),
    "study-other-direction": ("vantage-sweep", [*SW, "--study-name", "lr-tiny-synthetic", "--objectives",
                                                "peak_memory", *STORE], "exists with directions", nothing),
    "study-new-but-exists": ("vantage-sweep", [*SW, "--study-name", "lr-tiny-synthetic", "--new-study", *STORE],
                             "already exists", nothing),
    # --- datasets ---------------------------------------------------------------------------------
    "data-missing-folder": ("vantage-sweep", ["lr", "--model", "tiny", "--data", "spider:{c}/none", *STORE],
                            "not found", nothing),
    "data-no-tables": ("vantage-sweep", ["lr", "--model", "tiny", "--data", "spider:{c}/data", *STORE],
                       "no tables.json", dataset(no_tables)),
    "data-tables-not-list": ("vantage-sweep", ["lr", "--model", "tiny", "--data", "spider:{c}/data", *STORE],
                             "tables.json", dataset(tables_not_a_list)),
    "data-corrupt-json": ("vantage-sweep", ["lr", "--model", "tiny", "--data", "spider:{c}/data", *STORE],
                          "corrupt JSON", dataset(truncate_json)),
    "data-not-utf8-json": ("vantage-sweep", ["lr", "--model", "tiny", "--data", "spider:{c}/data", *STORE],
                           "corrupt JSON", dataset(latin1_json)),
    "data-no-examples": ("vantage-train", ["--config", "tiny", "--data_dir", "spider:{c}/data", "--num_train_steps",
                                           "1"], "dev.json", dataset(no_examples)),
    "train-data-dir-missing": ("vantage-train", ["--config", "tiny", "--data_dir", "{c}/none", "--num_train_steps", "1"],
                               "no such folder", nothing),
    "preprocess-missing-data": ("vantage-data", ["preprocess", "--config", "tiny", "--data_dir", "{c}/none",
                                                 "--output_dir", "{c}/out", "--quiet"], "none", nothing),
    "preprocess-bad-config": ("vantage-data", ["preprocess", "--config", "{c}/bad.yaml", "--data_dir", "{ws}/mini",
                                               "--output_dir", "{c}/out"], "malformed YAML",
                              yaml_file("data: {source: [\n")),
    "import-missing": ("vantage-data", ["import", "spider", "{c}/none", "--output_dir", "{c}/out"], "not found", nothing),
    # --- checkpoints and tokenizers ------------------------------------------------------------------
    "resume-other-shape": ("vantage-train", ["--config", "tiny", "--set", "model.num_experts=8", "--num_train_steps",
                                             "2", "--resume_from_checkpoint", "{ws}/run/checkpoint-latest",
                                             "--no-progress"], "another model shape", nothing),
    "eval-ckpt-other-shape": ("vantage-eval", ["--checkpoint", "{c}/ck", "--data_dir", "{ws}/mini", "--limit", "2"],
                              "another model shape", checkpoint_copy(other_shape)),
    "eval-tokenizer-mismatch": ("vantage-eval", ["--checkpoint", "{c}/ck", "--data_dir", "{ws}/mini", "--limit", "2"],
                                "does not match", checkpoint_copy(big_tokenizer)),
    "resume-tokenizer-mismatch": ("vantage-train", ["--config", "tiny", "--num_train_steps", "2",
                                                    "--resume_from_checkpoint", "{c}/ck", "--no-progress"],
                                  "tokenizer", checkpoint_copy(big_tokenizer)),
    "eval-tokenizer-no-specials": ("vantage-eval", ["--checkpoint", "{c}/ck", "--data_dir", "{ws}/mini", "--limit",
                                                    "2"], "special tokens", checkpoint_copy(tokenizer_without_specials)),
    "eval-corrupt-weights": ("vantage-eval", ["--checkpoint", "{c}/ck", "--data_dir", "{ws}/mini", "--limit", "2"],
                             "unreadable", checkpoint_copy(truncated_weights)),
    "eval-not-a-checkpoint": ("vantage-eval", ["--checkpoint", "{ws}/mini", "--data_dir", "{ws}/mini"],
                              "not a Vantage checkpoint", nothing),
    "resume-missing-checkpoint": ("vantage-train", ["--config", "tiny", "--resume_from_checkpoint", "{c}/none",
                                                    "--num_train_steps", "1"], "not a Vantage checkpoint", nothing),
    # --- scoring files -----------------------------------------------------------------------------
    "score-pred-not-utf8": ("vantage-eval", ["score", "--gold", "{c}/gold.sql", "--pred", "{c}/pred.sql",
                                             "--tables", SPIDER_TABLES], "not UTF-8",
                            gold_pred(b"SELECT 1\tdb\n", b"SELECT \xff\xfe\n")),
    "score-gold-missing": ("vantage-eval", ["score", "--gold", "{c}/none.sql", "--pred", "{c}/pred.sql",
                                            "--tables", SPIDER_TABLES], "not found",
                           gold_pred(b"", b"SELECT 1\n")),
    "score-count-mismatch": ("vantage-eval", ["score", "--gold", "{c}/gold.sql", "--pred", "{c}/pred.sql",
                                              "--tables", SPIDER_TABLES], "2 predictions for 1",
                             gold_pred(b"SELECT 1\tdb\n", b"SELECT 1\nSELECT 2\n")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, tmp_path, case):
    cli, args, needle, setup = CASES[case]
    c = tmp_path / "case"
    c.mkdir()
    setup(ws, c)
    before = tree_hashes(ws)
    args = [a.format(ws=ws, c=c) for a in args]
    r = run(cli, args, cwd=c)
    assert_one_line_error(r, needle)
    after = tree_hashes(ws)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}


def test_case_count():
    assert len(CASES) >= 30
