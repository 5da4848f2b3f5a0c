"""Shared helpers for the hardening, load and security tests (no tests here).

CLIs run as separate processes with the tests folder on PYTHONPATH, so `--objective-fn
test_hardening_faults:...` fault-injecting objectives load in the sweep and its trial children.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAKE = ["--objective-fn", "runners.fake_objective:quadratic"]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
# A small synthetic dataset (6 databases x 40 questions): data preparation stays cheap.
SMALL_DATA = ["--set", "data.synthetic_num_databases=6", "--set", "data.synthetic_examples_per_db=40"]
# A real (tiny) trial: 8 steps, checkpoints every 3, train report every step, 8 eval examples.
REAL = ["--steps-per-trial", "8", "--set", "training.eval_steps=4", "--set", "training.save_steps=3",
        "--set", "training.logging_steps=1", "--set", "data.max_eval_examples=8", "--set",
        "eval.max_new_tokens=32", "--pruner", "none", "--keep-checkpoints", *SMALL_DATA]


def env_with(extra: dict | None = None) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.update(extra or {})
    return e


def fsize_limit(nbytes: int):
    """preexec_fn: files written by the child cannot grow past `nbytes` (a full disk): writes
    fail with EFBIG instead of the default SIGXFSZ kill."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def cli(cwd, *args, env=None, timeout=600, preexec_fn=None, module="studies"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env_with(env),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def popen(cwd, *args, env=None, module="studies", new_session=False):
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env_with(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errs = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errs) == 1, stderr[-3000:]
    return errs[0]


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d.name))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def trial_child(parent: int, number: int) -> int | None:
    for pid in children_of(parent):
        cl = cmdline(pid)
        if "runners.trial_worker" in cl and "--trial-number" in cl and cl[cl.index("--trial-number") + 1] == str(number):
            return pid
    return None


def load_study(url: str, name: str):
    import optuna

    from studies.storage import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))


def finished_snapshot(study) -> dict:
    return {t.number: (t.state.name, t.value, dict(t.params), t.user_attrs.get("exact_match"))
            for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")}


TEMP_NAME = re.compile(r"^\.(checkpoint-[\w]+)\.(tmp|old)-\d+$")


def assert_checkpoints_intact(root: Path) -> list[Path]:
    """Every final-named checkpoint folder under `root` loads completely (config, weights of the
    right shapes, optimizer state, trainer state, tokenizer); anything half-written is only under
    a temporary name (.checkpoint-X.tmp-PID / .old-PID)."""
    import mlx.core as mx

    from vantage_core.data.tokenizer import SQLTokenizer
    from vantage_core.model import build_model
    from vantage_core.weights import load_checkpoint_config, load_state, load_weights

    finals = sorted(p for p in root.rglob("checkpoint-*") if p.is_dir())
    for ck in finals:
        assert not any(part.startswith(".") for part in ck.relative_to(root).parts), ck
        cfg = load_checkpoint_config(ck)
        load_weights(build_model(cfg), ck)
        assert isinstance(load_state(ck), dict)
        if (ck / "optimizer.safetensors").exists():
            assert mx.load(str(ck / "optimizer.safetensors"))
        SQLTokenizer.load(ck / "tokenizer.json")
    for p in root.rglob(".*"):
        if p.name == ".run_status.json.tmp" or p.parent.name.startswith(".checkpoint-"):
            continue
        assert TEMP_NAME.match(p.name), f"unexpected leftover {p}"
    return finals


@pytest.fixture
def pg_db():
    """(url, name, admin connection) of a fresh PostgreSQL database, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"vt_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    except Exception as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}", name, conn
    finally:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


def terminate_backends(conn, name: str) -> int:
    rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (name,)).fetchall()
    return len(rows)
