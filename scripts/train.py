#!/usr/bin/env python3
"""The guide's `python scripts/train.py ...`: a thin shim over `vantage-train`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vantage_core.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="scripts/train.py"))
