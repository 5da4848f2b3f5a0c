"""`vantage-sweep` refuses a sweep no sampled configuration of which fits (exit 2, one line,
before any study is created or changed), naming the options that would fit."""

import hashlib
import re
import subprocess
import sys

import optuna
import pytest

from search_spaces import get_space
from studies import feasibility
from studies.feasibility import check_sweep_fits, lean_options
from vantage_core.config import load_config
from vantage_core.errors import MemoryBudgetError
from vantage_core.model.memory import GiB, predict_memory


def sweep(cwd, *args):
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("limit", ["24GiB", "128GiB"])
def test_medium_on_small_memory_exits_2_one_line_and_creates_no_study(tmp_path, limit):
    r = sweep(tmp_path, "lr", "--model", "medium", "--max-memory", limit, "--trials", "2")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: sweep lr: no configuration")
    assert f"available {float(limit[:-3]):.1f} GiB" in lines[0] and "predicted peak 231.1 GiB" in lines[0]
    assert list(tmp_path.iterdir()) == []                 # no SQLite file, no runs folder
    if limit == "128GiB":                                 # names options with their peaks, each under the limit
        opts = re.findall(r"(training\.[\w.=,]+) \((\d+\.\d) GiB\)", lines[0])
        assert opts and all(float(p) <= 128 for _, p in opts)
        assert any("optimizer_state_dtype=bfloat16" in n for n, _ in opts)


def test_existing_study_left_byte_identical(tmp_path):
    db = tmp_path / "vantage_studies.db"
    study = optuna.create_study(study_name="lr-medium-synthetic", storage=f"sqlite:///{db}")
    study.enqueue_trial({"learning_rate": 2e-4})
    del study
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = sweep(tmp_path, "lr", "--model", "medium", "--max-memory", "64GiB", "--trials", "2")
    assert r.returncode == 2 and "no configuration the search space can sample fits" in r.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vantage_studies.db"]


def test_fitting_sweep_passes_and_returns_the_lowest_prediction():
    base = load_config("tiny")
    pred = check_sweep_fits(get_space("lr"), base, None, 8 * GiB, sweep="lr")
    assert pred["peak"] == predict_memory(base)["peak"] <= 8 * GiB


def test_batch_size_space_uses_its_smallest_choice():
    # The batch sweep can sample batch sizes that fit though the base config does not.
    base = load_config("tiny", {"training": {"batch_size": 64, "max_seq_length": 1024}, "model": {"max_position_embeddings": 1024}})
    space = get_space("batch-size")
    rs = space.ranges(base)
    smallest = min(rs["batch_size"].choices)
    small_cfg = base.replace(training={"batch_size": smallest})
    limit = (predict_memory(small_cfg)["peak"] + predict_memory(base)["peak"]) // 2
    assert predict_memory(base)["peak"] > limit
    assert check_sweep_fits(space, base, None, limit)["peak"] == predict_memory(small_cfg)["peak"]


def test_options_are_real_configs_and_the_proxy_hook_is_listed(monkeypatch):
    base = load_config("medium")
    names = {n for n, _ in lean_options(base)}
    assert "training.optimizer=adafactor" in names and "training.optimizer_state_dtype=bfloat16" in names
    for name, cfg in lean_options(base):
        for part in name.split(","):
            key, value = part.split("=")
            assert str(getattr(cfg.training, key.split(".")[1])).lower() == value.lower()
    proxy = load_config("tiny")
    monkeypatch.setattr(feasibility, "EXTRA_OPTIONS", [lambda cfg: [("--proxy 0.25", proxy)]])
    with pytest.raises(MemoryBudgetError) as e:
        check_sweep_fits(get_space("lr"), base, None, 100 * GiB, sweep="lr")
    assert f"--proxy 0.25 ({predict_memory(proxy)['peak'] / GiB:.1f} GiB)" in str(e.value)
