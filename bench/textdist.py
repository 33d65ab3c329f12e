"""ocrstream.textdist.levenshtein (rapidfuzz) vs the pure-Python DP it replaced, on page-sized
strings like the decoder's guard compares (model text vs the PDF text layer, capped at 2,000
characters). Work: len(a) * len(b) cells per pair for the DP. Prints seconds per pair and the ratio.

    python bench/textdist.py [--chars 2000] [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import random
import time

from ocrstream.textdist import levenshtein


def dp(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(os.urandom(8))
    alphabet = "abcdefghijklmnopqrstuvwxyz     .,\n"
    pairs = []
    for _ in range(args.pairs):
        a = "".join(rng.choices(alphabet, k=args.chars))
        b = "".join(c if rng.random() < 0.9 else rng.choice(alphabet) for c in a)
        pairs.append((a, b))
    levenshtein("warm", "up")  # the import happens on first use
    t = time.perf_counter()
    fast = [levenshtein(a, b) for a, b in pairs]
    t_fast = (time.perf_counter() - t) / len(pairs)
    t = time.perf_counter()
    slow = [dp(a, b) for a, b in pairs]
    t_slow = (time.perf_counter() - t) / len(pairs)
    assert fast == slow, (fast, slow)
    print(f"{args.chars} chars, {len(pairs)} pairs ({args.chars**2 / 1e6:.1f} M DP cells each)")
    print(
        f"rapidfuzz {t_fast * 1e3:.3f} ms/pair, pure-Python DP {t_slow * 1e3:.0f} ms/pair, speed-up {t_slow / t_fast:.0f}x"
    )


if __name__ == "__main__":
    main()
