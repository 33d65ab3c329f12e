"""Progressive forgetting as a pure planning function: which rung each segment keeps.

Segments are indexed newest first (0 = most recent). Rungs are indexed most tokens first
(0 = sharpest); rung ``len(costs)`` means dropped (0 tokens). A plan assigns each segment a rung
such that

* the total cost fits the budget,
* older segments never sit on a sharper rung than newer ones (rungs non-decreasing with age, so
  with one page per segment older segments never hold more tokens than newer ones),
* no segment is sharper than its cap (memories fade, they do not come back: the previous plan
  is the cap when a new segment arrives).

Starting from the caps, it repeatedly demotes by one rung the segment that loses the least value
per token saved, among those whose demotion keeps the order. Value = age weight x rung quality:
the weight halves every ``half_life`` segments, so old segments fade first while a sharp rung
far from the present can still give way before an old blurry one is dropped entirely. The newest
``keep_sharp`` segments (default 1: the present) give way only when nothing older is left.

Costs are one list (every segment costs the same per rung: square views of one size) or one list
per segment (a line-strip model's page costs what its lines cost).
"""

from __future__ import annotations

from collections.abc import Sequence

Costs = Sequence[int] | Sequence[Sequence[int]]


def _rows(costs: Costs, n: int) -> list[list[int]]:
    """Per-segment cost rows from either form (see module doc)."""
    if costs and isinstance(costs[0], Sequence):
        rows = [list(r) for r in costs]  # type: ignore[arg-type]
        if len(rows) != n:
            raise ValueError(f"{len(rows)} cost rows for {n} segments")
        return rows
    return [list(costs)] * n  # type: ignore[arg-type]


def default_quality(costs: Sequence[int]) -> list[float]:
    """Quality per rung when no measured curve is given: sqrt of the token share of the top rung."""
    top = float(costs[0])
    return [(c / top) ** 0.5 for c in costs]


def _check_row(costs: Sequence[int]) -> None:
    if not costs:
        raise ValueError("need at least one rung cost")
    # non-increasing: a page of very short lines may cost the same on two rungs of a line reader
    if any(c <= 0 for c in costs) or any(a < b for a, b in zip(costs, costs[1:], strict=False)):
        raise ValueError(f"rung costs must be positive and non-increasing, got {list(costs)}")


def _check(
    costs: Sequence[int], n: int, budget: int, caps: Sequence[int] | None, quality: Sequence[float]
) -> None:
    _check_row(costs)
    if n < 0 or budget < 0:
        raise ValueError(f"segment count and budget must be >= 0, got n={n} budget={budget}")
    if caps is not None:
        if len(caps) != n:
            raise ValueError(f"{len(caps)} caps for {n} segments")
        if any(not 0 <= c <= len(costs) for c in caps):
            raise ValueError(f"caps must be rungs in 0..{len(costs)}, got {list(caps)}")
        if any(a > b for a, b in zip(caps, caps[1:], strict=False)):
            raise ValueError(f"caps must be non-decreasing with age (newest first), got {list(caps)}")
    if len(quality) != len(costs):
        raise ValueError(f"{len(quality)} quality values for {len(costs)} rungs")


def plan_levels(
    costs: Sequence[int],
    n: int,
    budget: int,
    caps: Sequence[int] | None = None,
    quality: Sequence[float] | None = None,
    half_life: float = 4.0,
    keep_sharp: int = 1,
) -> list[int]:
    """Rung per segment (newest first) under ``budget``; see the module doc for the rules.

    The ``keep_sharp`` newest segments fade only once every older segment is gone.
    """
    rows = _rows(costs, n)
    first = rows[0] if rows else list(costs)  # type: ignore[arg-type]
    quality = list(quality) if quality is not None else default_quality(first)
    _check(first, n, budget, caps, quality)
    for row in rows:
        _check_row(row)
        if len(row) != len(first):
            raise ValueError(f"every segment needs {len(first)} rung costs, got {row}")
    if half_life <= 0 or keep_sharp < 0:
        raise ValueError(f"half_life must be positive and keep_sharp >= 0, got {half_life}, {keep_sharp}")
    drop = len(first)
    cost = [[*row, 0] for row in rows]
    qual = [*quality, 0.0]
    levels = list(caps) if caps is not None else [0] * n
    total = sum(cost[i][r] for i, r in enumerate(levels))
    weight = [0.5 ** (i / half_life) for i in range(n)]
    while total > budget:
        best, best_key = -1, None
        for i, r in enumerate(levels):
            if r == drop:
                continue
            if i + 1 < n and levels[i + 1] < r + 1:
                continue  # the next older segment would become sharper than this one
            saved = cost[i][r] - cost[i][r + 1]
            loss = weight[i] * max(0.0, qual[r] - qual[r + 1])
            ratio = loss / saved if saved > 0 else float("inf")  # a free step: only on the way to dropping
            key = (i < keep_sharp, ratio, -i)  # pinned last, then cheapest value per token, oldest
            if best_key is None or key < best_key:
                best, best_key = i, key
        # the oldest kept segment is always demotable, so best >= 0 while total > 0
        total -= cost[best][levels[best]] - cost[best][levels[best] + 1]
        levels[best] += 1
    return levels


def plan_cost(costs: Costs, levels: Sequence[int]) -> int:
    rows = _rows(costs, len(levels))
    return sum([*row, 0][r] for row, r in zip(rows, levels, strict=True))
