"""The guide's Multi-Stage Training example as printed, with what is available offline:

    python scripts/train.py --config configs/stage1.yaml
    python scripts/train.py --config configs/stage2.yaml \\
        --resume_from_checkpoint ./checkpoints/stage1/checkpoint-best

configs/stage1.yaml trains on synthetic plus Spider (a mixed source, preprocessed once into the
cache), configs/stage2.yaml on Spider only from stage 1's best checkpoint; without --output_dir a
config file's run goes to ./checkpoints/<file name>."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vantage_core.cli.train import default_output_dir, is_mix, prepare_mix
from vantage_core.config import load_config
from vantage_core.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT.parent / "shared" / "seed" / "TRAINING_GUIDE.md"
SPIDER = Path(os.environ.get("VANTAGE_TEST_SPIDER", ROOT.parent / "shared" / "data" / "spider"))
GUIDE_RESUME = "./checkpoints/stage1/checkpoint-best"   # the guide's stage 2 command


@pytest.fixture(scope="module")
def stages():
    return load_config(ROOT / "configs" / "stage1.yaml"), load_config(ROOT / "configs" / "stage2.yaml")


def test_both_configs_load_and_validate(stages):
    s1, s2 = stages
    assert is_mix(s1.data.source) and s1.data.source.split("+")[0] == "synthetic"
    assert s1.data.synthetic_weight > 0 and s1.data.spider_weight > 0
    assert s2.data.source.startswith("spider:") and not is_mix(s2.data.source)
    # stage 2 starts from stage 1's weights: the architecture keys are the same
    m1, m2 = s1.to_dict()["model"], s2.to_dict()["model"]
    m1.pop("init_from"), m2.pop("init_from")
    assert m1 == m2
    # the same validation carve (seed, fraction): stage 2 validates on databases stage 1 never trained on
    assert (s1.data.seed, s1.data.validation_fraction) == (s2.data.seed, s2.data.validation_fraction)


def test_stage2_resolves_stage1s_output(stages, monkeypatch):
    s1, s2 = stages
    monkeypatch.chdir(ROOT)                         # the guide runs from the repository root
    out1 = default_output_dir("configs/stage1.yaml")
    assert out1 == Path("checkpoints/stage1")
    assert (out1 / "checkpoint-best").resolve() == Path(s2.model.init_from).resolve()
    assert Path(GUIDE_RESUME).resolve() == Path(s2.model.init_from).resolve()
    assert default_output_dir("configs/stage2.yaml") == Path("checkpoints/stage2")
    assert default_output_dir("tiny") is None       # the shipped names keep "no output folder"
    if GUIDE.is_file():
        text = GUIDE.read_text()
        assert "--config configs/stage1.yaml" in text and f"--resume_from_checkpoint {GUIDE_RESUME}" in text


def test_data_sources_name_the_repositorys_spider(stages):
    s1, s2 = stages
    spider1 = s1.data.source.split("+")[1].split(":", 1)[1]
    spider2 = s2.data.source.split(":", 1)[1]
    assert spider1 == spider2
    # relative to the repository root: the ../shared/data/spider the tests and bench scripts use
    assert (ROOT / spider1).resolve() == (ROOT.parent / "shared" / "data" / "spider").resolve()


@pytest.mark.parametrize("source,needle", [
    ("synthetic+bird:/x", "each part of a mix"),
    ("synthetic+synthetic", "give each dataset once"),
    ("synthetic+spider:/nonexistent/spider", "not a Spider folder"),
])
def test_bad_mixes_are_one_line(stages, source, needle):
    cfg = stages[0].replace(data={"source": source})
    with pytest.raises(DataError, match=needle):
        prepare_mix(cfg)


def _guide_layout(tmp: Path, spider: Path) -> Path:
    """tmp/repo/configs + tmp/shared/data/spider: `../shared/data/spider` as from the repository."""
    repo = tmp / "repo"
    shutil.copytree(ROOT / "configs", repo / "configs")
    (tmp / "shared" / "data").mkdir(parents=True)
    (tmp / "shared" / "data" / "spider").symlink_to(spider, target_is_directory=True)
    return repo


def _train(repo: Path, *args, timeout=1800):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=repo,
                          capture_output=True, text=True, timeout=timeout, env=env)


SHORT = ["--num_train_steps", "2", "--set", "training.eval_steps=2", "--set", "training.save_steps=2",
         "--set", "data.max_eval_examples=4", "--set", "eval.max_new_tokens=8", "--no-progress"]


def _check_two_stages(repo: Path, extra: list[str]):
    r = _train(repo, "--config", "configs/stage1.yaml", *SHORT, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data mix synthetic+spider:" in r.stderr
    best = repo / "checkpoints" / "stage1" / "checkpoint-best"
    assert (best / "model.safetensors").is_file() and (best / "tokenizer.json").is_file()
    r = _train(repo, "--config", "configs/stage2.yaml", "--resume_from_checkpoint", GUIDE_RESUME, *SHORT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"initialized weights from \./checkpoints/stage1/checkpoint-best", r.stderr), r.stderr[-2000:]
    out2 = repo / "checkpoints" / "stage2"
    assert (out2 / "checkpoint-best" / "model.safetensors").is_file()
    # stage 2 keeps stage 1's tokenizer (token ids must match the weights)
    assert (out2 / "checkpoint-best" / "tokenizer.json").read_text() == (best / "tokenizer.json").read_text()


@pytest.mark.integration
def test_guide_example_runs_as_printed_on_a_small_spider(tmp_path, monkeypatch):
    """The two commands as printed (shortened by flags), with a small Spider-layout folder in
    place of Spider and a small synthetic set: the mix, the default output folders, stage 2 from
    stage 1's checkpoint-best with its tokenizer."""
    from vantage_core.data.synthetic import generate_synthetic
    small = generate_synthetic(tmp_path / "small-spider", num_databases=4, examples_per_db=20, seed=3)
    repo = _guide_layout(tmp_path, small)
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "cache"))
    _check_two_stages(repo, ["--set", "data.synthetic_num_databases=4", "--set", "data.synthetic_examples_per_db=20"])


@pytest.mark.slow
def test_guide_example_runs_as_printed_on_spider(tmp_path, monkeypatch):
    """The same on the real Spider and the full synthetic mix (minutes on a CPU)."""
    if not (SPIDER / "tables.json").is_file():
        pytest.skip("../shared/data/spider not available")
    repo = _guide_layout(tmp_path, SPIDER)
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "cache"))
    _check_two_stages(repo, [])
