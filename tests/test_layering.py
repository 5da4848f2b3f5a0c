"""The layering of pyproject.toml's [tool.importlinter] contracts holds (what `lint-imports`
checks): no module imports a layer above its own, imports inside functions included."""

from pathlib import Path

from importlinter.application.use_cases import lint_imports
from importlinter.configuration import configure

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch, capsys):
    configure()
    monkeypatch.chdir(ROOT)   # the root packages are found from the repository root
    kept = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    out = capsys.readouterr().out
    assert kept, out    # the report lists each broken contract and the imports that break it
    for name in ("vantage_core layers", "sweeps, runners and reports build on the core",
                 "reports read studies' results, never the sweep machinery"):
        assert f"{name} KEPT" in out, out
