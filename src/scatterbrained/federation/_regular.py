"""Random (near-)regular simple graphs on ``range(n)``, reproducible from a ``random.Random``.

Only ``random.Random`` methods whose streams are stable across Python versions are used, so
every node draws the same graph from the same seed whatever its platform.
"""

from __future__ import annotations

import random

__all__ = ["random_regular_pairs"]


def random_regular_pairs(n: int, k: int, rng: random.Random) -> list[tuple[int, int]]:
    """Return the edges ``(low, high)`` of a random simple graph on ``range(n)``.

    Every node has degree ``k`` (one node ``k - 1`` when ``n * k`` is odd). The graph starts
    circulant and is randomised by ``10 * edges`` degree-preserving double-edge swaps.

    Args:
        n: number of nodes.
        k: wanted degree, ``1 <= k <= n - 1``.
        rng: the seeded generator.
    """
    pairs = _circulant(n, k)
    _double_edge_swaps(pairs, rng, attempts=10 * len(pairs))
    return pairs


def _circulant(n: int, k: int) -> list[tuple[int, int]]:
    """A simple graph on ``range(n)`` with every degree ``k`` (one ``k - 1`` if ``n*k`` odd)."""
    pairs = [(i, (i + j) % n) for i in range(n) for j in range(1, k // 2 + 1)]
    if k % 2 == 1 and n % 2 == 0:
        pairs += [(i, i + n // 2) for i in range(n // 2)]
    elif k % 2 == 1:  # n odd: match n - 1 nodes at offset (n - 1) / 2, node n - 1 stays at k - 1
        half = (n - 1) // 2
        pairs += [(i, i + half) for i in range(half)]
    return [(min(a, b), max(a, b)) for a, b in pairs]


def _double_edge_swaps(pairs: list[tuple[int, int]], rng: random.Random, attempts: int) -> None:
    """Randomise ``pairs`` in place, keeping every degree and the graph simple."""
    present = set(pairs)
    for _ in range(attempts if len(pairs) >= 2 else 0):
        i, j = rng.randrange(len(pairs)), rng.randrange(len(pairs))
        (a, b), (c, d) = pairs[i], pairs[j]
        if rng.random() < 0.5:
            c, d = d, c
        new1, new2 = (min(a, d), max(a, d)), (min(c, b), max(c, b))
        if len({a, b, c, d}) < 4 or new1 in present or new2 in present:
            continue
        present -= {pairs[i], pairs[j]}
        present |= {new1, new2}
        pairs[i], pairs[j] = new1, new2
