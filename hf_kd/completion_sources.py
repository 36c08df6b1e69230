"""The completion sources a distillation run draws from, and their one check (torch-free: the cards use it too)."""

from __future__ import annotations

import json
import math

__all__ = ["COMPLETION_SOURCES", "parse_completion_source"]

COMPLETION_SOURCES = ("student", "teacher", "dataset")


def parse_completion_source(source: str | dict) -> str | dict[str, float]:
    """Validate `completion_source`; a dict (or its JSON string, from the CLI) is a mixture of sources.

    The one check of a completion source (the config's field, and the model card's record of it).
    """
    if isinstance(source, str) and source.strip().startswith("{"):
        source = json.loads(source)
    if isinstance(source, str):
        if source not in COMPLETION_SOURCES:
            raise ValueError(
                f"completion_source={source!r} is unknown; use one of {COMPLETION_SOURCES} or a dict of probabilities "
                'such as {"teacher": 0.5, "student": 0.5}.'
            )
        return source
    if not isinstance(source, dict) or not source:
        raise ValueError(f"completion_source must be a string or a non-empty dict of probabilities, got {source!r}.")
    unknown = set(source) - set(COMPLETION_SOURCES)
    if unknown:
        raise ValueError(f"completion_source has unknown keys {sorted(unknown)}; allowed: {COMPLETION_SOURCES}.")
    probs = {k: float(v) for k, v in source.items()}
    if any(not math.isfinite(p) or p < 0 for p in probs.values()) or not math.isclose(sum(probs.values()), 1.0):
        raise ValueError(
            f"completion_source probabilities must be >= 0 and sum to 1, got {probs}; e.g. "
            '{"teacher": 0.7, "dataset": 0.3}.'
        )
    return probs
