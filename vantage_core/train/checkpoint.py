"""Compatibility only: data/prepare.py (issue 20, being reworked on its own branch) still imports
`find_checkpoint` from here. Checkpoints are read and written by vantage_core/weights.py and
found by vantage_core/sources.py; delete this file once data/ imports vantage_core.sources."""

from ..sources import find_checkpoint

__all__ = ["find_checkpoint"]
