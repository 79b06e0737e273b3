"""The learner's parts on their own: published snapshot and digest, Exchange bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.learning.exchange import all_finite
from scatterbrained.wire.codec import compute_digest

pytestmark = pytest.mark.timeout(30)

Run = Callable[..., None]


def test_all_finite_spots_nan_and_infinity_in_float_arrays_only() -> None:
    clean = {"w": np.ones((2, 2), np.float32), "steps": np.arange(3, dtype=np.int64)}

    assert all_finite(clean)
    assert not all_finite({**clean, "b": np.array([0.0, np.nan], np.float32)})
    assert not all_finite({**clean, "b": np.array([np.inf], np.float64)})


def test_the_published_digest_is_cached_until_the_next_commit(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X", mlp(0))
            await ns.open()
            learner = ns.learner
            before = learner.state.digest()

            await ns.train(1, digit_loader(0, 1, 64))
            after = learner.state.digest()

            assert before != after
            assert after == compute_digest(learner.state.published)
            assert learner.state.digest() is after  # not recomputed

    arun(main)


def test_a_learner_without_a_model_has_no_digest(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X")
            await ns.open()

            with pytest.raises(ConfigurationError, match="published no model"):
                ns.learner.state.digest()

    arun(main)


def test_forgetting_the_centre_resets_the_global_round(
    arun: Run, cluster_factory: Any, mlp: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X", mlp(0))
            await ns.open()
            exchange = ns.learner.exchange
            exchange.global_source, exchange.global_round = "centre", 7

            exchange.forget("someone-else")
            kept = (exchange.global_source, exchange.global_round)
            exchange.forget("centre")

            assert kept == ("centre", 7)
            assert (exchange.global_source, exchange.global_round) == (None, -1)

    arun(main)


def test_model_requests_are_answered_at_most_every_half_second_per_requester() -> None:
    """Answers are rate-limited per requester (a forged requester address cannot turn a
    stream of small requests into a stream of model offers at a victim) and in total."""
    from scatterbrained.learning.model_sharing import (
        MAX_ANSWERS_PER_S,
        MAX_CONCURRENT_ANSWERS,
        MIN_ANSWER_INTERVAL_S,
        AnswerLimiter,
    )

    limiter = AnswerLimiter()
    first = limiter.admit("r", 100.0)
    while_answering = limiter.admit("r", 100.0 + MIN_ANSWER_INTERVAL_S)
    limiter.done("r")
    too_soon = limiter.admit("r", 100.0 + MIN_ANSWER_INTERVAL_S / 2)
    later = limiter.admit("r", 100.0 + MIN_ANSWER_INTERVAL_S)
    limiter.done("r")
    crowd = []
    for i in range(MAX_ANSWERS_PER_S):
        crowd.append(limiter.admit(f"q{i}", 100.6))
        limiter.done(f"q{i}")
    concurrent = AnswerLimiter()
    at_once = [concurrent.admit(f"c{i}", 0.0) for i in range(MAX_CONCURRENT_ANSWERS + 1)]

    assert (first, while_answering, too_soon, later) == (None, "request_rate", "request_rate", None)
    assert crowd.count("busy") == 2  # the two answers to "r" count in the same second
    assert at_once[-1] == "busy" and at_once.count(None) == MAX_CONCURRENT_ANSWERS
    assert limiter.admit("q0", 101.7) is None  # a second later there is room again
