#!/usr/bin/env python
"""The guide's `python scripts/download_datasets.py --datasets ... --output_dir ./data --cache_dir ./cache`:
a thin shim over `vantage-data download` (same flags)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vantage_core.cli.data import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("download", "scripts/download_datasets.py"))
