"""Search spaces: `get_space(name).suggest(trial, base_config, ranges=None) -> Config`."""

from vantage_core.errors import SearchSpaceError

from .base import PARAM_KEYS, Range, SearchSpace, merge_ranges, model_size
from .spaces import SPACES


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise SearchSpaceError(f"unknown sweep '{name}' (choose from {', '.join(SPACES)})") from None


def suggest(name: str, trial, base, ranges=None):
    return get_space(name).suggest(trial, base, ranges)


__all__ = ["SPACES", "get_space", "suggest", "Range", "SearchSpace", "merge_ranges", "model_size", "PARAM_KEYS"]
