"""Throughput of one ResNet-18-sized model update, through scatterbrained versus bare pyzmq.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/transfer.py [--repeats 15] [--warmup 3] [--profile]

It builds the 122 arrays of torchvision's ``resnet18().state_dict()`` by hand (same names
and shapes, every array float32, about 11.7 M values, 46.8 MB) and moves them from one
endpoint to another on 127.0.0.1 in two ways, alternating, in the same process:

* ``api``: two :class:`scatterbrained.Node` objects (real ZeroMQ, ``discovery_scope="off"``
  with a bootstrap address) share a namespace; the sender's namespace pushes a
  :class:`~scatterbrained.wire.messages.ModelUpdate` (``ns.send``, the path ``Exchange.push``
  uses), the receiving node decodes it with its default limits (every frame, dtype, shape
  and length validated; values are scanned for NaN/inf later, right before a merge) and
  delivers it to its namespace, whose ``learner.on_update`` is replaced by a stub that checks
  the arrays' specs against the expected model and stops the clock.
* ``raw``: a bare pyzmq DEALER sends a small JSON header plus the same 122 buffers
  (``send_multipart(copy=False)``) to a ROUTER that receives all frames (``copy=False``).

Each timing runs from the start of the send to the moment the receiver holds the whole
message (decoded and validated for ``api``). The last line printed is one JSON object with
``payload_mb`` (10**6 bytes), ``api_mb_s``, ``raw_mb_s`` and ``ratio`` (= api / raw, from the
medians), plus ``ratio_with_finite_check_in_decode`` (a third side, ``api_checked``: the same
path to a node built with ``Limits(check_finite=True)``, i.e. the value scan in the receive
path), ``ratio_best`` and ``ratio_paired``,
per-run seconds and page faults, a breakdown of the library's CPU work (encode, decode with
and without the finite check, spec check) and machine information.
With ``--profile`` the library transfers run under cProfile and the top functions go to
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import zmq

import scatterbrained as sb
from scatterbrained.wire.codec import Limits, decode, encode
from scatterbrained.wire.limits import Specs, check_specs, specs_of
from scatterbrained.wire.messages import Message, ModelUpdate

Arrays = dict[str, np.ndarray]
Shape = tuple[int, ...]

NAMESPACE = "transfer-bench"
RECEIVE_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------ the payload


def _batch_norm(prefix: str, channels: int) -> Iterator[tuple[str, Shape]]:
    for field in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}.{field}", (channels,)
    yield f"{prefix}.num_batches_tracked", ()


def _basic_block(prefix: str, in_ch: int, out_ch: int) -> Iterator[tuple[str, Shape]]:
    yield f"{prefix}.conv1.weight", (out_ch, in_ch, 3, 3)
    yield from _batch_norm(f"{prefix}.bn1", out_ch)
    yield f"{prefix}.conv2.weight", (out_ch, out_ch, 3, 3)
    yield from _batch_norm(f"{prefix}.bn2", out_ch)
    if in_ch != out_ch:
        yield f"{prefix}.downsample.0.weight", (out_ch, in_ch, 1, 1)
        yield from _batch_norm(f"{prefix}.downsample.1", out_ch)


def resnet18_shapes() -> list[tuple[str, Shape]]:
    """Names and shapes of torchvision's ``resnet18().state_dict()``, in its order (122)."""
    shapes: list[tuple[str, Shape]] = [("conv1.weight", (64, 3, 7, 7))]
    shapes.extend(_batch_norm("bn1", 64))
    in_ch = 64
    for layer, out_ch in enumerate((64, 128, 256, 512), start=1):
        shapes.extend(_basic_block(f"layer{layer}.0", in_ch, out_ch))
        shapes.extend(_basic_block(f"layer{layer}.1", out_ch, out_ch))
        in_ch = out_ch
    shapes.append(("fc.weight", (1000, 512)))
    shapes.append(("fc.bias", (1000,)))
    return shapes


def resnet18_arrays(seed: int = 0) -> Arrays:
    """Random float32 arrays with :func:`resnet18_shapes` (``num_batches_tracked`` too)."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in resnet18_shapes()}


def payload_bytes(arrays: Arrays) -> int:
    """Total bytes of the arrays' data."""
    return sum(int(a.nbytes) for a in arrays.values())


# ------------------------------------------------------------------------------ raw pyzmq


class RawPair:
    """A bare pyzmq DEALER -> ROUTER pair on 127.0.0.1, each with its own context."""

    def __init__(self) -> None:
        self._send_ctx = zmq.Context()
        self._recv_ctx = zmq.Context()
        self.router = self._recv_ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.dealer = self._send_ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(f"tcp://127.0.0.1:{port}")
        self.router.setsockopt(zmq.RCVTIMEO, int(RECEIVE_TIMEOUT_S * 1000))

    def transfer(self, arrays: Arrays, seq: int) -> float:
        """Send the arrays once and wait until the ROUTER has every frame; return seconds."""
        manifest = [(name, a.dtype.str, a.shape) for name, a in arrays.items()]
        header = json.dumps({"seq": seq, "manifest": manifest}).encode()
        frames: list[Any] = [header, *(a.data.cast("B") for a in arrays.values())]
        start = time.perf_counter()
        self.dealer.send_multipart(frames, copy=False)
        received = self.router.recv_multipart(copy=False)
        elapsed = time.perf_counter() - start
        if len(received) != len(frames) + 1:  # + the routing id
            raise RuntimeError(f"raw: got {len(received)} frames, expected {len(frames) + 1}")
        return elapsed

    def close(self) -> None:
        """Close both sockets (linger 0) and terminate both contexts."""
        self.dealer.close(linger=0)
        self.router.close(linger=0)
        self._send_ctx.term()
        self._recv_ctx.term()


# ------------------------------------------------------------------------------ scatterbrained


class ApiPair:
    """Two started nodes sharing a namespace; the receiver's update handler is a stub."""

    def __init__(
        self,
        sender: sb.Node,
        sender_ns: sb.Namespace,
        receiver_ns: sb.Namespace,
        expected: Specs,
    ) -> None:
        self.sender = sender
        self.sender_ns = sender_ns
        self.receiver_ns = receiver_ns
        self.expected = expected
        self._arrived: asyncio.Event = asyncio.Event()
        self._arrived_at = 0.0
        self.rejected: list[str] = []
        # The namespace calls learner.on_update(sender, announced_mode, update) for every
        # decoded ModelUpdate; this stub validates it against the expected specs instead of
        # storing it for merging.
        setattr(receiver_ns.learner, "on_update", self._on_update)  # noqa: B010

    def _on_update(self, sender: str, announced: Any, update: ModelUpdate) -> str | None:
        try:
            check_specs(update.arrays, self.expected)
        except sb.WireError as exc:
            self.rejected.append(str(exc))
            return "specs"
        self._arrived_at = time.perf_counter()
        self._arrived.set()
        return None

    async def transfer(self, arrays: Arrays, version: int) -> float:
        """Push the arrays once; return seconds until the receiver validated them.

        Raises:
            RuntimeError: the update was not delivered within ``RECEIVE_TIMEOUT_S``.
        """
        record = self.sender.peers.get(self.receiver_ns.node.id)
        if record is None:
            raise RuntimeError("the receiver is not in the sender's peer table")
        self._arrived = asyncio.Event()
        update = ModelUpdate(version=version, samples=1, mode="peer", arrays=arrays)
        start = time.perf_counter()
        if not await self.sender_ns.send(record.id, update):
            raise RuntimeError("the library dropped the update at send time")
        try:
            await asyncio.wait_for(self._arrived.wait(), RECEIVE_TIMEOUT_S)
        except asyncio.TimeoutError:
            stats = self.receiver_ns.node.stats.as_dict()
            raise RuntimeError(f"update not delivered; receiver stats {stats}") from None
        return self._arrived_at - start


# ------------------------------------------------------------------------------ the runs

SIDES = ("api", "api_checked", "raw")


def _rotations(count: int) -> Iterator[tuple[str, ...]]:
    """Yield ``count`` orders of :data:`SIDES`, rotating which side goes first."""
    for i in range(count):
        shift = i % len(SIDES)
        yield SIDES[shift:] + SIDES[:shift]


async def _node(stack: contextlib.AsyncExitStack, node_id: str, **kwargs: Any) -> sb.Node:
    node = sb.Node(id=node_id, host="127.0.0.1", discovery_scope="off", **kwargs)
    return await stack.enter_async_context(node)


async def _start_pairs(stack: contextlib.AsyncExitStack, specs: Specs) -> dict[str, ApiPair]:
    """One sender and two receivers (default limits / finite scan in decode), linked."""
    default = await _node(stack, "bench-receiver")
    checked = await _node(stack, "bench-receiver-checked", limits=Limits(check_finite=True))
    sender = await _node(stack, "bench-sender", bootstrap=[default.address, checked.address])
    tx_ns = await stack.enter_async_context(sender.namespace(NAMESPACE))
    pairs: dict[str, ApiPair] = {}
    for side, receiver in (("api", default), ("api_checked", checked)):
        rx_ns = await stack.enter_async_context(receiver.namespace(NAMESPACE))
        await rx_ns.wait_for_peers(1, timeout=10)
        pairs[side] = ApiPair(sender, tx_ns, rx_ns, specs)
    await tx_ns.wait_for_peers(2, timeout=10)
    return pairs


class Run(NamedTuple):
    """One measured transfer."""

    seconds: float
    minor_faults: int  # page faults of the whole process during it (fresh buffer pages)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


async def run_transfers(
    arrays: Arrays, repeats: int, warmup: int, profiler: cProfile.Profile | None
) -> dict[str, list[Run]]:
    """Run ``warmup`` then ``repeats`` transfers of each side, alternating.

    ``api_checked`` is the same library path to a second receiving node built with
    ``Limits(check_finite=True)``: its difference to ``api`` is the NaN/inf scan.

    Raises:
        RuntimeError: a transfer failed or an update was rejected.
    """
    runs: dict[str, list[Run]] = {side: [] for side in SIDES}
    async with contextlib.AsyncExitStack() as stack:
        raw = RawPair()
        stack.callback(raw.close)
        pairs = await _start_pairs(stack, specs_of(arrays))
        version = 0
        for phase, count in (("warmup", warmup), ("measure", repeats)):
            for order in _rotations(count):
                for side in order:
                    version += 1
                    faults = _minor_faults()
                    if side == "raw":
                        seconds = raw.transfer(arrays, version)
                    else:
                        profiling = profiler is not None and phase == "measure" and side == "api"
                        with _profiling(profiler if profiling else None):
                            seconds = await pairs[side].transfer(arrays, version)
                    if phase == "measure":
                        runs[side].append(Run(seconds, _minor_faults() - faults))
        for side, pair in pairs.items():
            if pair.rejected:
                raise RuntimeError(f"{side}: updates rejected: {pair.rejected[:3]}")
    return runs


@contextlib.contextmanager
def _profiling(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def _best_ms(func: Callable[[], Any], tries: int = 5) -> float:
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 3)


def library_breakdown(arrays: Arrays) -> dict[str, float]:
    """Best-of-5 milliseconds of the library's CPU steps on this payload (no network)."""
    message = Message("bench-sender", NAMESPACE, 1, 1, ModelUpdate(1, 1, "peer", arrays))
    frames = encode(message)
    views = [memoryview(f) for f in frames]
    expected = specs_of(arrays)
    decoded = decode(views)
    assert isinstance(decoded.body, ModelUpdate)
    body = decoded.body
    return {
        "encode_ms": _best_ms(lambda: encode(message)),
        "decode_ms": _best_ms(lambda: decode(views)),
        "decode_no_finite_ms": _best_ms(lambda: decode(views, Limits(check_finite=False))),
        "check_specs_ms": _best_ms(lambda: check_specs(body.arrays, expected)),
        "copy_payload_ms": _best_ms(lambda: [bytes(v) for v in views[1:]]),
    }


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_5m_15m": [round(x, 2) for x in load],
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "scatterbrained": sb.__version__,
    }


def summarize(runs: list[Run], megabytes: float) -> dict[str, Any]:
    """Median, spread and throughput of measured transfers."""
    times = [run.seconds for run in runs]
    median = statistics.median(times)
    return {
        "median_s": round(median, 5),
        "min_s": round(min(times), 5),
        "max_s": round(max(times), 5),
        "runs_s": [round(t, 5) for t in times],
        "mb_s": round(megabytes / median, 1),
        "best_mb_s": round(megabytes / min(times), 1),
        "minor_faults_per_run": [run.minor_faults for run in runs],
    }


def paired_ratio(api: list[Run], raw: list[Run]) -> float:
    """Median over rounds of raw seconds / api seconds (both ran in the same round).

    Less sensitive than the ratio of medians to load that drifts during the run.
    """
    ratios = [r.seconds / a.seconds for a, r in zip(api, raw, strict=True)]
    return round(statistics.median(ratios), 3)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the JSON result as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="measured transfers per side")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured transfers per side")
    parser.add_argument("--profile", action="store_true", help="cProfile the api transfers")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    os.environ.setdefault("SCATTERBRAINED_DISCOVERY", "off")
    logging.basicConfig(level=logging.WARNING)

    arrays = resnet18_arrays()
    megabytes = payload_bytes(arrays) / 1e6
    profiler = cProfile.Profile() if args.profile else None
    runs = asyncio.run(run_transfers(arrays, args.repeats, args.warmup, profiler))
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue(), file=sys.stderr)
    sides = {side: summarize(runs[side], megabytes) for side in SIDES}
    api, checked, raw = sides["api"], sides["api_checked"], sides["raw"]
    result = {
        "payload_mb": round(megabytes, 3),
        "api_mb_s": api["mb_s"],
        "raw_mb_s": raw["mb_s"],
        "ratio": round(api["mb_s"] / raw["mb_s"], 3),
        "ratio_with_finite_check_in_decode": round(checked["mb_s"] / raw["mb_s"], 3),
        "ratio_best": round(api["best_mb_s"] / raw["best_mb_s"], 3),
        "ratio_paired": paired_ratio(runs["api"], runs["raw"]),
        "arrays": len(arrays),
        "values": sum(int(a.size) for a in arrays.values()),
        "repeats": args.repeats,
        "warmup": args.warmup,
        **sides,
        "library_cpu_ms": library_breakdown(arrays),
        "machine": machine_info(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
