"""Compatibility only: data/prepare.py and data/tokenizer.py (issue 20, being reworked on their
own branch) still import `is_dense_source` / `tokenizer_parts` from here. Dense sources are told
apart and read without tensors in vantage_core/sources.py, their weights loaded and upcycled in
vantage_core/weights.py; delete this file once data/ imports vantage_core.sources."""

from ..sources import is_dense_source, tokenizer_parts

__all__ = ["is_dense_source", "tokenizer_parts"]
