"""Dataset mixing: sample training examples from several sources in the configured proportions
(``data.spider_weight``, ``bird_sql_weight``, ``wiki_sql_weight``, ``gretel_synthetic_weight``,
``synthetic_weight``).

Weights are normalized over the sources that are present; a present source with weight 0 is
left out. When every present source has weight 0 (the default) the sources are used in their
natural proportions (every example once). Sampling is seeded, draws each source's examples
without replacement and reshuffles when a source is exhausted (a small source with a large
weight is repeated), and `proportions_table` reports the realized shares.
"""

from __future__ import annotations

from random import Random
from typing import Sequence, TypeVar

import pandas as pd

T = TypeVar("T")

WEIGHT_KEYS = {
    "spider": "spider_weight",
    "bird": "bird_sql_weight",
    "wikisql": "wiki_sql_weight",
    "gretel": "gretel_synthetic_weight",
    "synthetic": "synthetic_weight",
}


def weights_from_config(data_cfg, present: Sequence[str]) -> dict[str, float]:
    """{source: weight} for the present sources (all 0 -> natural proportions: {})."""
    w = {s: float(getattr(data_cfg, WEIGHT_KEYS[s], 0.0)) for s in present if s in WEIGHT_KEYS}
    if not any(v > 0 for v in w.values()):
        return {}
    return w


class MixtureSampler:
    """Draw (source, index) pairs with source probabilities proportional to `weights`."""

    def __init__(self, sizes: dict[str, int], weights: dict[str, float], seed: int = 0):
        self.sizes = {s: n for s, n in sizes.items() if n > 0}
        if weights:
            self.weights = {s: float(weights.get(s, 0.0)) for s in self.sizes}
        else:
            self.weights = {s: float(n) for s, n in self.sizes.items()}
        total = sum(self.weights.values())
        if total <= 0:
            raise ValueError("no source with a positive weight and examples")
        self.probs = {s: w / total for s, w in self.weights.items() if w > 0}
        self.rng = Random(seed)
        self._order: dict[str, list[int]] = {}
        self._pos: dict[str, int] = {}

    def _next_index(self, source: str) -> int:
        order = self._order.get(source)
        if order is None or self._pos[source] >= len(order):
            order = list(range(self.sizes[source]))
            self.rng.shuffle(order)
            self._order[source], self._pos[source] = order, 0
        i = order[self._pos[source]]
        self._pos[source] += 1
        return i

    def sample(self, n: int) -> list[tuple[str, int]]:
        names = list(self.probs)
        cum, acc = [], 0.0
        for s in names:
            acc += self.probs[s]
            cum.append(acc)
        out = []
        for _ in range(n):
            r = self.rng.random() * acc
            k = next((i for i, c in enumerate(cum) if r < c), len(names) - 1)
            out.append((names[k], self._next_index(names[k])))
        return out


def mix_examples(by_source: dict[str, list[T]], weights: dict[str, float], n: int | None = None,
                 seed: int = 0) -> list[T]:
    """A mixed list of `n` examples (default: as many as there are) drawn by `weights`.

    With empty `weights` (natural proportions) and default `n` every example appears once,
    shuffled."""
    sizes = {s: len(v) for s, v in by_source.items()}
    total = sum(sizes.values())
    if total == 0:
        return []
    n = total if n is None else n
    if not weights and n == total:  # natural proportions: every example once, shuffled
        out = [x for v in by_source.values() for x in v]
        Random(seed).shuffle(out)
        return out
    sampler = MixtureSampler(sizes, weights, seed)
    return [by_source[s][i] for s, i in sampler.sample(n)]


def proportions_table(by_source: dict[str, int], mixed_sources: Sequence[str],
                      weights: dict[str, float]) -> pd.DataFrame:
    """One row per source: available examples, target share, realized count and share."""
    counts = pd.Series(list(mixed_sources), dtype="object").value_counts() if mixed_sources else pd.Series(dtype=int)
    total_w = sum(weights.values()) if weights else sum(by_source.values())
    rows = []
    for s, avail in sorted(by_source.items()):
        w = weights.get(s, 0.0) if weights else float(avail)
        got = int(counts.get(s, 0))
        rows.append({"source": s, "available": avail, "weight": round(w if weights else 0.0, 4),
                     "target": round(w / total_w, 4) if total_w else 0.0,
                     "sampled": got, "realized": round(got / max(1, len(mixed_sources)), 4)})
    return pd.DataFrame(rows, columns=["source", "available", "weight", "target", "sampled", "realized"])
