"""Whole runs of the tiny model: CLI, checkpoints, exact resume, sinks, divergence, memory."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from trainer_fixtures import CHEAP_EVAL, SMALL_DATA, losses, tiny_cfg, tiny_data
from vantage_core.cli.train import main as train_main
from vantage_core.eval.evaluate import evaluate
from vantage_core.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SETS = [f"--set=data.{k}={v}" for k, v in SMALL_DATA.items()] + \
       [f"--set=eval.{k}={v}" for k, v in CHEAP_EVAL.items()] + \
       ["--set=training.batch_size=4", "--set=training.logging_steps=1", "--set=training.warmup_steps=2"]


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_cli_trains_evaluates_saves_best_latest_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--config", str(ROOT / "configs/tiny_model.yaml"), "--data_dir", "synthetic", "--output_dir",
            str(out), "--num_train_steps", "6", "--set=training.eval_steps=3", "--set=training.save_steps=3",
            "--no-progress", *SETS]
    assert train_main(args) == 0
    assert "done: 6 steps" in capsys.readouterr().out
    for name in ("checkpoint-3", "checkpoint-6", "checkpoint-best", "checkpoint-latest"):
        assert (out / name / "model.safetensors").is_file(), name
    assert (out / "checkpoint-latest" / "optimizer.safetensors").is_file()
    assert json.loads((out / "checkpoint-latest" / "trainer_state.json").read_text())["step"] == 6
    assert "num_train_steps: 6" in (out / "config.yaml").read_text()          # resolved config saved
    assert json.loads((out / "run_status.json").read_text())["status"] == "completed"
    recs = _jsonl(out / "metrics.jsonl")
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6]
    for key in ("eval/loss", "eval/perplexity", "eval/exact_match", "eval/valid_sql", "eval/own_schema_tables"):
        assert key in evals[0]
    assert all(0.0 <= e["eval/own_schema_tables"] <= 1.0 for e in evals)
    tr = [r for r in recs if r["kind"] == "train"]
    for key in ("train/loss", "train/aux_loss", "train/learning_rate", "train/grad_norm", "train/throughput",
                "train/tokens_per_sec", "expert/utilization", "expert/load_balance",
                "expert/tokens_per_expert", "moe/dropped_fraction", "system/peak_memory_bytes"):
        assert key in tr[0], key
    assert tr[0]["train/tokens_per_sec"] > 0 and len(tr[0]["expert/tokens_per_expert"]) == 4

    # TensorBoard event files, read back with tensorboard's own reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "eval/exact_match", "expert/utilization"} <= set(tags)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert acc.Scalars("train/loss")[0].value == pytest.approx(tr[0]["train/loss"], rel=1e-6)

    # Resume from checkpoint-latest and continue to step 9.
    args2 = [a if a != "6" else "9" for a in args] + ["--resume_from_checkpoint", str(out / "checkpoint-latest")]
    assert train_main(args2) == 0
    assert json.loads((out / "checkpoint-latest" / "trainer_state.json").read_text())["step"] == 9
    steps = [r["step"] for r in _jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_resume_continues_exactly(tmp_path):
    """Loss curve of 'train 16 steps' == 'train 8, stop, resume to 16' (fixed seed, CPU),
    with dropout on, so the random state is exercised too."""
    cfg = tiny_cfg(training={"num_train_steps": 16, "save_steps": 8, "eval_steps": 1000},
                   model={"hidden_dropout": 0.1, "expert_dropout": 0.1})
    data = tiny_data()
    full = train(cfg, data, [], evaluate=evaluate, output_dir=tmp_path / "a")
    assert full.status == "completed"
    # 'stop at 8': the checkpoint a run leaves behind at step 8 (save_steps=8).
    resumed = train(cfg, data, [], evaluate=evaluate, output_dir=tmp_path / "b", resume_from=tmp_path / "a" / "checkpoint-8")
    a = losses(full.train_history)
    b = losses(resumed.train_history)
    assert [h["step"] for h in resumed.train_history] == list(range(9, 17))
    np.testing.assert_array_equal(a[8:], b)   # bit-identical
    gn_a = [h["train/grad_norm"] for h in full.train_history[8:]]
    assert gn_a == [h["train/grad_norm"] for h in resumed.train_history]


def test_save_total_limit_deletes_oldest(tmp_path):
    cfg = tiny_cfg(training={"num_train_steps": 5, "save_steps": 1, "save_total_limit": 2, "eval_steps": 5})
    r = train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert names == ["checkpoint-4", "checkpoint-5", "checkpoint-best", "checkpoint-latest"]
    assert r.best_checkpoint == str(tmp_path / "checkpoint-best")


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg(training={"num_train_steps": 10, "save_steps": 2, "learning_rate": 1e4, "warmup_steps": 0,
                             "max_grad_norm": 0.0})
    r = train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=tmp_path)
    assert r.status == "diverged"
    assert "diverged at step" in r.error and "not finite" in r.error
    assert r.steps < 10
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["status"] == "diverged" and status["step"] == int(r.error.split("step ")[1].split(":")[0])
    # Every checkpoint left behind holds finite weights from before the divergence.
    import mlx.core as mx
    for ck in tmp_path.glob("checkpoint-*"):
        w = mx.load(str(ck / "model.safetensors"))
        assert all(bool(mx.all(mx.isfinite(v))) for v in w.values()), ck
        assert json.loads((ck / "trainer_state.json").read_text())["step"] < status["step"]


def test_quick_test_run_is_refused_by_the_memory_prediction(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VANTAGE_DEVICE_MEMORY", "24GiB")
    t0 = time.perf_counter()
    rc = train_main(["--config", str(ROOT / "configs/small_model.yaml"), "--data_dir", "./processed_data",
                     "--output_dir", str(tmp_path / "debug"), "--debug", "--num_train_steps", "1000"])
    err = capsys.readouterr().err
    assert rc == 2
    assert time.perf_counter() - t0 < 10
    assert err.startswith("error: predicted peak memory") and err.count("\n") == 1
    assert "> available 24.0 GiB" in err
    assert not (tmp_path / "debug").exists()


def test_quick_test_run_passes_the_weights_check_on_an_80gb_card(tmp_path, capsys, monkeypatch):
    """On an H100 the weights + AdamW (34 GiB) fit, so the run goes on to load its data (the
    full check waits for the data's real longest sequence); here the data folder is missing."""
    monkeypatch.setenv("VANTAGE_DEVICE_MEMORY", "80GiB")
    rc = train_main(["--config", str(ROOT / "configs/small_model.yaml"), "--data_dir", str(tmp_path / "nope"),
                     "--output_dir", str(tmp_path / "debug"), "--debug", "--num_train_steps", "1000"])
    err = capsys.readouterr().err
    assert rc == 2 and "no such folder" in err and "predicted peak memory" not in err


def test_memory_check_uses_the_longest_padded_batch(monkeypatch):
    from vantage_core.model.memory import predict_memory
    from vantage_core.train.trainer import padded_length
    d = tiny_data()
    cfg = tiny_cfg(model={"max_position_embeddings": 2048}, training={"batch_size": 64, "max_seq_length": 2048})
    L = padded_length(d, 2048)
    assert L % 32 == 0 and max(len(s.ids) for s in d.train) - 1 <= L < 2048
    at_data = predict_memory(cfg, seq_length=L)["peak"]
    at_max = predict_memory(cfg)["peak"]
    assert at_data < at_max / 2
    # A device between the two: refused at max_seq_length, but the real batches fit.
    monkeypatch.setenv("VANTAGE_DEVICE_MEMORY", str((at_data + at_max) // 2))
    r = train(cfg.replace(training={"num_train_steps": 1, "eval_steps": 100}), d, [], evaluate=evaluate)
    assert r.status == "completed"


def test_train_refuses_a_config_that_cannot_fit(monkeypatch):
    from vantage_core.errors import MemoryBudgetError
    monkeypatch.setenv("VANTAGE_DEVICE_MEMORY", str(50 * 2**20))   # 50 MiB
    cfg = tiny_cfg(training={"batch_size": 64})
    with pytest.raises(MemoryBudgetError, match=r"predicted peak memory .* > available 0.0 GiB.*gradient_checkpointing"):
        train(cfg, tiny_data(), [], evaluate=evaluate)


def test_dry_run_prints_parameters_near_2b_8b_24b(capsys):
    import re
    got = {}
    for name in ("small", "medium", "large"):
        assert train_main(["--config", str(ROOT / f"configs/{name}_model.yaml"), "--dry-run"]) == 0
        out = capsys.readouterr().out
        got[name] = float(re.search(r"total ([\d.]+)B", out).group(1))
        assert "active per token" in out and "predicted peak memory" in out
    assert 1.9 <= got["small"] <= 2.1
    assert 7.6 <= got["medium"] <= 8.4
    assert 23.0 <= got["large"] <= 25.0


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    out = tmp_path / "run"
    rc = train_main(["--config", "tiny", "--data_dir", "synthetic", "--output_dir", str(out),
                     "--num_train_steps", "2", "--wandb_project", "vantage-test", "--wandb_run_name", "t",
                     "--no-progress", "--no-tensorboard", *SETS])
    assert rc == 0
    runs = list(out.glob("wandb/offline-run-*"))
    assert runs, list(out.rglob("*"))[:20]
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_guide_quick_test_command_refused_as_printed(tmp_path):
    """The guide's `python scripts/train.py ... --debug --num_train_steps 1000`, as a process
    on this machine's real memory (no override): one line, exit 2, within seconds."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "VANTAGE_DEVICE_MEMORY"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "scripts/train.py", "--config", "configs/small_model.yaml",
                        "--data_dir", "./processed_data", "--output_dir", str(tmp_path / "debug"), "--debug",
                        "--num_train_steps", "1000"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: predicted peak memory") and p.stderr.count("\n") == 1
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("multiple", [32, 128])
def test_pad_to_multiple_of_sets_shapes_not_the_loss(multiple):
    """training.pad_to_multiple_of rounds every batch's padded length (fewer compiled
    shapes); right padding never changes the loss of the real tokens."""
    import mlx.core as mx
    from vantage_core.model import MoETransformer
    from vantage_core.train.trainer import make_batch, value_and_grad_mp
    d = tiny_data()
    cfg = tiny_cfg(training={"pad_to_multiple_of": multiple}, model={"hidden_dropout": 0.0, "expert_dropout": 0.0})
    seqs = d.train[:4]
    inp, pos, tgt, w, _ = make_batch(seqs, cfg.training.max_seq_length, d.tokenizer.pad_id,
                                     cfg.training.pad_to_multiple_of)
    L = inp.shape[1]
    assert L == min(cfg.training.max_seq_length, -(-(max(len(s.ids) for s in seqs) - 1) // multiple) * multiple)
    ref = make_batch(seqs, cfg.training.max_seq_length, d.tokenizer.pad_id, 8)
    mx.random.seed(0)
    m = MoETransformer(cfg.model)
    m.eval()
    fn = value_and_grad_mp(m, cfg)
    (a, _), _ = fn(m, inp, pos, tgt, w)
    (b, _), _ = fn(m, *ref[:4])
    assert abs(float(a.item()) - float(b.item())) < 5e-5 * abs(float(b.item()))   # fp32 reassociation only
