#!/usr/bin/env python
"""The guide's `python scripts/preprocess_data.py --config C --data_dir D --output_dir O --num_workers N`:
a thin shim over `vantage-data preprocess` (same flags)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vantage_core.cli.data import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("preprocess", "scripts/preprocess_data.py"))
