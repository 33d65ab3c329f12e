"""The forgetting planner: budget, age order and caps hold over random insert sequences."""

from __future__ import annotations

import pytest

from ocrstream.compression.planner import plan_cost, plan_levels


def _random_costs(rng) -> list[int]:
    n = rng.randint(1, 5)
    costs = sorted(rng.sample(range(1, 500), n), reverse=True)
    return costs


def test_random_insert_sequences_keep_budget_order_and_caps(rng):
    for trial in range(200):
        costs = _random_costs(rng)
        budget = rng.randint(0, 3 * costs[0] + 40)
        half_life = rng.choice([0.5, 1.0, 3.0, 8.0])
        keep = rng.randint(0, 2)
        levels: list[int] = []  # newest first
        for step in range(rng.randint(1, 30)):
            caps = [0, *levels]  # a new segment arrives at the sharpest rung
            levels = plan_levels(costs, len(caps), budget, caps, half_life=half_life, keep_sharp=keep)
            ctx = f"seed={rng.seed_value} trial={trial} step={step} costs={costs} budget={budget} levels={levels}"
            assert plan_cost(costs, levels) <= budget, ctx
            cost = [*costs, 0]
            tokens = [cost[r] for r in levels]
            # older segments (later in the list) never hold more tokens than newer ones
            assert all(a >= b for a, b in zip(tokens, tokens[1:], strict=False)), ctx
            assert all(r >= c for r, c in zip(levels, caps, strict=True)), ctx  # memories never sharpen
            # a pinned (newest) segment faded only if every older segment is gone
            if any(levels[i] > caps[i] for i in range(min(keep, len(levels)))):
                assert all(r == len(costs) for r in levels[keep:]), ctx
            # nothing fades while the caps already fit
            if plan_cost(costs, caps) <= budget:
                assert levels == caps, ctx
            levels = [r for r in levels if r < len(costs)]  # dropped segments leave the store


def test_fading_gradient_newest_sharpest():
    costs = [31, 21, 13, 7]
    levels = plan_levels(costs, 8, 100)
    assert levels[0] == 0  # the present stays sharp
    assert levels == sorted(levels)
    assert len(set(levels)) >= 3  # a gradient, not all-or-nothing
    assert plan_cost(costs, levels) <= 100


def test_everything_fits_at_top_rung():
    assert plan_levels([10, 5], 4, 40) == [0, 0, 0, 0]


def test_zero_budget_drops_everything():
    assert plan_levels([10, 5, 2], 3, 0) == [3, 3, 3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"costs": [5, 10], "n": 1, "budget": 5}, "non-increasing"),
        ({"costs": [10, 0], "n": 1, "budget": 5}, "positive"),
        ({"costs": [10, 5], "n": 2, "budget": -1}, "budget"),
        ({"costs": [10, 5], "n": 2, "budget": 5, "caps": [1, 0]}, "non-decreasing"),
        ({"costs": [10, 5], "n": 2, "budget": 5, "caps": [0]}, "1 caps for 2"),
        ({"costs": [10, 5], "n": 1, "budget": 5, "quality": [1.0]}, "quality"),
    ],
)
def test_bad_inputs_name_the_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_levels(**kwargs)


def test_per_segment_costs_keep_budget_order_and_caps(rng):
    """A line-strip model's pages cost what their lines cost: one cost row per segment."""
    for trial in range(150):
        n_rungs = rng.randint(1, 4)
        rows: list[list[int]] = []
        levels: list[int] = []
        budget = rng.randint(0, 900)
        for step in range(rng.randint(1, 20)):
            rows = [sorted(rng.sample(range(1, 300), n_rungs), reverse=True), *rows]
            caps = [0, *levels]
            levels = plan_levels(rows, len(caps), budget, caps)
            ctx = f"seed={rng.seed_value} trial={trial} step={step} rows={rows} levels={levels}"
            assert plan_cost(rows, levels) <= budget, ctx
            assert levels == sorted(levels), ctx  # older never sharper
            assert all(r >= c for r, c in zip(levels, caps, strict=True)), ctx
            if plan_cost(rows, caps) <= budget:
                assert levels == caps, ctx
            kept = [i for i, r in enumerate(levels) if r < n_rungs]
            rows, levels = [rows[i] for i in kept], [levels[i] for i in kept]
    with pytest.raises(ValueError, match="cost rows"):
        plan_levels([[3, 2], [3, 2]], 3, 10)


def test_equal_rung_costs_are_passed_through_on_the_way_to_dropping():
    """A page of very short lines can cost the same on two rungs of a line reader: the planner
    steps over the free rung rather than getting stuck above the budget."""
    rows = [[20, 20, 12], [30, 20, 20]]
    levels = plan_levels(rows, 2, 25, [0, 0])
    assert plan_cost(rows, levels) <= 25 and levels == sorted(levels)
    assert plan_levels(rows, 2, 0, [0, 0]) == [3, 3]
