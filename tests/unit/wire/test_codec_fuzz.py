"""Fuzz test of the wire decoder: 10,000 hostile multipart inputs, only WireError comes out.

Inputs mix pure noise, msgpack headers with random structure, headers that follow the schema
but lie (oversized or negative shapes, bad dtypes, huge manifests, wrong lengths), NaN/inf
injected into valid messages, and byte-level mutations of valid encodings. The generator is
seeded, so a failure is reproducible from the printed case number.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pytest

from scatterbrained.errors import WireError
from scatterbrained.wire import (
    PROTOCOL_VERSION,
    Architecture,
    Limits,
    Message,
    ModelOffer,
    ModelUpdate,
    Raw,
    compute_digest,
    decode,
    encode,
)

CASES = 10_000
LIMITS = Limits(max_frames=64, max_frame_bytes=1 << 20, max_message_bytes=4 << 20)
DTYPES = ["<f2", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "|b1"]
BAD_DTYPES = ["|O", ">f4", "<c8", "<U4", "V8", "", "float32", "<f16", "raw", "|S3"]

Frames = list[Any]


def _scalar(rng: random.Random) -> object:
    return rng.choice(
        [
            None,
            True,
            rng.randint(-(2**63), 2**64 - 1),
            rng.random() * 1e300,
            float("nan"),
            "x" * rng.randint(0, 300),
            b"\x00" * rng.randint(0, 4),
            [],
            {},
            {"k": [1, [2, [3]]]},
        ]
    )


def _shape(rng: random.Random) -> list[Any]:
    kind = rng.randrange(10)
    if kind == 0:
        return [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
    if kind == 1:
        return [2**62, 2**62, 0]
    if kind == 2:
        return [1] * rng.randint(9, 40)
    if kind == 3:
        return [-rng.randint(1, 10)]
    if kind == 4:
        return [rng.randint(0, 2**64 - 1)]
    if kind == 5:
        return [_scalar(rng)]
    return [rng.choice([0, 1, 2, 4, 16, 25])]


def _spec(rng: random.Random) -> list[Any]:
    name = rng.choice(["w", "b", "", "n" * 300, "~architecture", str(rng.random())])
    dtype = rng.choice(DTYPES + BAD_DTYPES)
    return [name, dtype, _shape(rng)]


def _body(rng: random.Random) -> list[Any]:
    roll = rng.random()
    if roll < 0.4:  # a valid ModelUpdate body, so the manifest's lies are what gets tested
        return [4, 1, rng.choice([5, 5, 5, -3]), "peer", -1]
    if roll < 0.7:  # a plausible ModelOffer body
        arch = ["factory", None, {"a": _scalar(rng)}] if rng.random() < 0.5 else None
        return [6, 1, 1, rng.randint(-1, 5), bytes(rng.choice([0, 0, 32, 7])), arch]
    if roll < 0.8:
        return [3]
    return [rng.randint(0, 8), *(_scalar(rng) for _ in range(rng.randint(0, 5)))]


def _lying_header(rng: random.Random) -> Frames:
    """A header that is valid msgpack, mostly schema-shaped, with lies in its manifest."""
    count = rng.choice([0, 1, 2, 3, 5, 70, 5000]) if rng.random() < 0.9 else rng.randint(0, 9)
    manifest = [_spec(rng) for _ in range(min(count, 50))] * max(1, count // 50)
    version = PROTOCOL_VERSION if rng.random() < 0.9 else rng.choice([0, 2, -1, "1", None])
    sender = rng.choice(["node", "node", "node", "node", "s" * 300, 5])
    routing = [sender, "ns", rng.randint(0, 9), rng.randint(0, 9)]
    header = [version, *routing, _body(rng), manifest]
    if rng.random() < 0.1:
        header = header[: rng.randint(0, len(header))]
    frames: Frames = [msgspec.msgpack.encode(header)]
    frame_count = min(80, rng.choice([len(manifest), len(manifest), rng.randint(0, 6)]))
    for _ in range(frame_count):
        frames.append(rng.randbytes(rng.choice([0, 1, 4, 8, 16, 64, 100])))
    return frames


def _noise(rng: random.Random) -> Frames:
    return [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(0, 6))]


def _valid_update(rng: random.Random) -> Message:
    arrays = {
        f"a{i}": np.asarray(rng.random() * 10, dtype=rng.choice(["<f2", "<f4", "<f8"])).reshape(
            (1,) * rng.randint(0, 3)
        )
        for i in range(rng.randint(0, 4))
    }
    if rng.random() < 0.5:
        body: Any = ModelUpdate(1, 5, "peer", arrays)
    else:
        arch = Architecture("torch.export", payload=rng.randbytes(10))
        body = ModelOffer(1, 1, 1, arrays, compute_digest(arrays), arch)
    return Message("node", "ns", 1, 1, body)


def _inject_non_finite(rng: random.Random) -> Frames:
    dtype = rng.choice([np.float16, np.float32, np.float64])
    values = np.ones(rng.randint(1, 32), dtype=dtype)
    values[rng.randrange(values.size)] = rng.choice([np.nan, np.inf, -np.inf])
    return list(encode(Message("n", "s", 0, 0, ModelUpdate(1, 1, "peer", {"w": values}))))


def _mutate_valid(rng: random.Random) -> Frames:
    if rng.random() < 0.2:
        message = Message("n", "s", 0, 0, Raw(tuple(rng.randbytes(5) for _ in range(3))))
    else:
        message = _valid_update(rng)
    frames = [bytearray(frame) for frame in encode(message)]
    for _ in range(rng.randint(1, 4)):
        index = rng.randrange(len(frames)) if frames else 0
        action = rng.randrange(5)
        if not frames or action == 0:
            frames.insert(index, bytearray(rng.randbytes(rng.randint(0, 32))))
        elif action == 1:
            del frames[index]
        elif action == 2 and frames[index]:
            frames[index][rng.randrange(len(frames[index]))] = rng.randrange(256)
        elif action == 3:
            frames[index] = frames[index][: rng.randint(0, len(frames[index]))]
        else:
            frames[index] += rng.randbytes(rng.randint(1, 9))
    return [bytes(frame) for frame in frames]


GENERATORS: list[Callable[[random.Random], Frames]] = [
    _noise,
    _lying_header,
    _lying_header,
    _inject_non_finite,
    _mutate_valid,
    _mutate_valid,
]


@pytest.mark.timeout(30)
def test_ten_thousand_hostile_inputs_raise_only_wire_error() -> None:
    # Prepare
    rng = random.Random(20240611)
    inputs = [rng.choice(GENERATORS)(rng) for _ in range(CASES)]
    outcomes: Counter[str] = Counter()

    # Execute
    started = time.perf_counter()
    for case, frames in enumerate(inputs):
        try:
            decode(frames, LIMITS)
        except WireError as error:
            outcomes[error.reason] += 1
        except Exception as error:  # pragma: no cover - this is the failure being tested
            pytest.fail(f"case {case}: {type(error).__name__} escaped: {error}")
        else:
            outcomes["accepted"] += 1
    elapsed = time.perf_counter() - started

    # Assert
    assert outcomes["malformed"] == 0, "an unforeseen exception was turned into 'malformed'"
    assert outcomes["accepted"] > 0
    expected_reasons = {"empty", "header", "version", "frame_count", "non_finite", "length"}
    expected_reasons |= {"dtype", "shape", "name", "field", "too_many_frames", "digest"}
    assert expected_reasons <= set(outcomes), outcomes
    assert elapsed < 10.0, f"decoding {CASES} inputs took {elapsed:.1f} s"
