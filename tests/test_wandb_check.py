"""`--wandb_project` checks W&B before any work: wandb installed, and logged in or WANDB_MODE
offline/disabled; otherwise one line with the fix, exit code 2, no data loaded and no output
folder created. A fake `wandb` module stands in for the real one."""

from __future__ import annotations

import sys
import types

import pytest

from vantage_core.cli import train as train_cli
from vantage_core.cli.args import check_wandb
from vantage_core.errors import ConfigError


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))


def fake_wandb(api_key=None):
    m = types.ModuleType("wandb")
    m.api = types.SimpleNamespace(api_key=api_key)
    m.init = lambda **kw: pytest.fail("wandb.init must not be reached")
    return m


@pytest.fixture
def no_data(monkeypatch):
    import vantage_core.data.prepare as prep

    def boom(*a, **k):
        raise AssertionError("data was loaded before the W&B check")
    monkeypatch.setattr(prep, "prepare_data", boom)


def run_train(tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_cli.main(["--config", "tiny", "--data_dir", "synthetic", "--output_dir", str(out),
                         "--num_train_steps", "1", "--wandb_project", "vantage-text2sql", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return rc, err, out


def test_wandb_missing_is_one_line_before_any_work(monkeypatch, tmp_path, capsys, no_login, no_data):
    monkeypatch.setitem(sys.modules, "wandb", None)    # import wandb -> ImportError
    rc, err, out = run_train(tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: --wandb_project needs wandb"), err
    assert "pip install" in err[0]
    assert not out.exists()


def test_wandb_not_logged_in_is_one_line_with_the_fix(monkeypatch, tmp_path, capsys, no_login, no_data):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(api_key=None))
    rc, err, out = run_train(tmp_path, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: --wandb_project: W&B is not logged in"), err
    assert "wandb login" in err[0] and "WANDB_MODE=offline" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("mode", ["offline", "disabled", "OFFLINE"])
def test_offline_or_disabled_needs_no_login(monkeypatch, no_login, mode):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(api_key=None))
    monkeypatch.setenv("WANDB_MODE", mode)
    check_wandb()


def test_logged_in_passes(monkeypatch, tmp_path, no_login):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(api_key="k" * 40))
    check_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(api_key=None))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    check_wandb()
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    check_wandb()


def test_other_errors_of_the_api_do_not_crash(monkeypatch, no_login):
    m = fake_wandb()

    class Api:
        @property
        def api_key(self):
            raise RuntimeError("settings unreadable")
    m.api = Api()
    monkeypatch.setitem(sys.modules, "wandb", m)
    with pytest.raises(ConfigError, match="not logged in"):
        check_wandb()
