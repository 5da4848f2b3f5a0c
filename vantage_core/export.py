"""Compatibility only: data/prepare.py (issue 20, being reworked on its own branch) still imports
`is_hf_folder` from here. Weights live in vantage_core/weights.py (`export_checkpoint`), sources
in vantage_core/sources.py; delete this file once data/ imports vantage_core.sources."""

from .sources import is_hf_folder

__all__ = ["is_hf_folder"]
