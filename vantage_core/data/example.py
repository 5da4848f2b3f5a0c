"""The one example record every source (Spider, BIRD, WikiSQL, Gretel, synthetic) yields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class Example:
    id: str                 # stable id within its source, e.g. "spider/train/123"
    source: str             # "spider", "bird", "wikisql", "gretel", "synthetic"
    db_id: str
    question: str
    query: str              # gold SQL as the source wrote it
    split: str = "train"    # train | validation | dev | test
    evidence: str = ""      # BIRD's external knowledge, empty elsewhere
    db_path: Optional[str] = None   # real SQLite file when one exists
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Example":
        return cls(**d)
