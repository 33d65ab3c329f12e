"""ocrstream.textdist: rapidfuzz's Levenshtein against a plain reference DP on fresh random inputs."""

from __future__ import annotations

import importlib.util
import os
import random
import tomllib
from pathlib import Path

from ocrstream import textdist
from ocrstream.textdist import levenshtein

REPO = Path(__file__).resolve().parents[2]


def _load_dp():
    """The textbook O(len(a) * len(b)) recurrence, as bench/textdist.py times it."""
    spec = importlib.util.spec_from_file_location("bench_textdist", REPO / "bench" / "textdist.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.dp


_dp = _load_dp()


def _mutate(rng: random.Random, s: str, alphabet: str) -> str:
    out = list(s)
    for _ in range(rng.randint(0, max(1, len(s) // 3))):
        op = rng.randrange(3)
        pos = rng.randint(0, len(out))
        if op == 0:
            out.insert(pos, rng.choice(alphabet))
        elif out and op == 1:
            del out[min(pos, len(out) - 1)]
        elif out:
            out[min(pos, len(out) - 1)] = rng.choice(alphabet)
    return "".join(out)


def test_matches_the_reference_dp_on_fresh_random_strings() -> None:
    rng = random.Random(os.urandom(8))
    alphabet = "ab cdé\n中" + "".join(chr(rng.randint(33, 0x2FFF)) for _ in range(8))
    for _ in range(300):
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 60)))
        # related pairs (what the guard compares) and unrelated ones
        b = (
            _mutate(rng, a, alphabet)
            if rng.random() < 0.7
            else "".join(rng.choices(alphabet, k=rng.randint(0, 60)))
        )
        d = levenshtein(a, b)
        assert d == _dp(a, b), (a, b)
        assert type(d) is int and d == levenshtein(b, a)


def test_token_id_sequences_and_edges() -> None:
    rng = random.Random(os.urandom(8))
    for _ in range(100):
        a = [rng.randrange(50_000) for _ in range(rng.randint(0, 40))]
        b = [x if rng.random() < 0.8 else rng.randrange(50_000) for x in a][: rng.randint(0, len(a) + 1)]
        assert levenshtein(a, b) == _dp(a, b)
    s = "".join(rng.choices("xyz", k=rng.randint(1, 30)))
    assert (levenshtein("", ""), levenshtein(s, ""), levenshtein("", s), levenshtein(s, s)) == (
        0,
        len(s),
        len(s),
        0,
    )


def test_backed_by_rapidfuzz_and_declared_where_the_guard_runs() -> None:
    # The decoder's guard calls this per page: the compiled implementation, not a Python loop.
    from rapidfuzz.distance import Levenshtein

    assert textdist._impl() is Levenshtein
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for role in ("decoder", "train"):
        assert any(d.split(">")[0].split("=")[0].strip() == "rapidfuzz" for d in extras[role]), role
