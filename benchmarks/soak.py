"""Soak under attack: two honest nodes keep training while a hostile process attacks them.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/soak.py                 # 10 minutes of attack
    python benchmarks/soak.py --minutes 2

Everything stays on 127.0.0.1 (ZeroMQ) and the loopback discovery scope (beacons to
127.255.255.255 only; the script sets ``SCATTERBRAINED_DISCOVERY=loopback``).

Phase 1 (attacked): two honest nodes (one process, default options: asynchronous gossip,
fully connected) train one warm-up epoch (torch and the first exchange allocate then; the
RSS baseline and the stall watch start after it), then 1 epoch at a time on two halves of
scikit-learn's digits until ``--minutes`` passed, while a separate attacker process
(``--attacker``, started after the baseline) mixes, at a bounded rate (~400 messages/s):
forged beacons of hundreds of ids, Hellos of new ids with 64 namespaces and addresses of a
victim port (reflection), Hellos under the honest ids from another session (takeover), raw
payloads of 1 MiB for a ``recv()`` that never comes, model requests, sign-flipped updates
claiming 10^9 samples, updates with counters past 2**62, malformed frames and TCP garbage.
Phase 2 (clean): two fresh nodes train the same number of epochs with no attacker.

One JSON line: epochs, honest accuracy attacked and clean and the drop, RSS at the start of
the attack and its growth (MiB), the longest event-loop stall (s), the drops by reason, and
``ok`` (both finished, drop < 0.02, RSS growth < 100 MiB, stall < 0.5 s).
"""

from __future__ import annotations

import os

os.environ.setdefault("SCATTERBRAINED_DISCOVERY", "loopback")

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import time
import uuid
from typing import Any

import numpy as np

NAMESPACE = f"soak-{uuid.uuid4().hex[:8]}"
VICTIM = "tcp://127.0.0.1:9"  # nobody listens there: reflected answers go nowhere
EPOCH_LIMIT_S = 60.0  # one epoch of two nodes takes well under a second: more is a hang


# ---------------------------------------------------------------------- honest side


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def stall_monitor(worst: list[float], period: float = 0.05) -> None:
    """Record the longest lateness of a ``period`` s sleep (how long the loop was blocked)."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(period)
        worst[0] = max(worst[0], time.monotonic() - start - period)


def make_model(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def load_digits_halves() -> tuple[list[Any], Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from scatterbrained.sim.datasets import ArrayLoader

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    loaders = [ArrayLoader(x_train[i::2], y_train[i::2], 16, seed=i) for i in range(2)]
    return loaders, ArrayLoader(x_test, y_test, 512, shuffle=False)


async def honest_pair(minutes: float | None, epochs: int | None, attack: bool) -> dict[str, Any]:
    """Train two nodes for ``minutes`` (or ``epochs``); with ``attack`` run the attacker."""
    import scatterbrained as sb

    loaders, test = load_digits_halves()
    worst = [0.0]
    attacker: asyncio.subprocess.Process | None = None
    async with sb.Node(host="127.0.0.1") as a, sb.Node(host="127.0.0.1") as b:
        nss = [a.namespace(NAMESPACE, make_model(0)), b.namespace(NAMESPACE, make_model(1))]
        for ns in nss:
            await ns.open()
        await nss[0].wait_for_peers([b.id], timeout=10)
        await asyncio.gather(*(ns.train(1, loaders[i]) for i, ns in enumerate(nss)))  # warm
        monitor = asyncio.ensure_future(stall_monitor(worst))  # from here on: no setup work
        rss_start, rss_max = rss_mib(), 0.0
        if attack:
            targets = [f"{n.id}={n.address}" for n in (a, b)]
            attacker = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--namespace", NAMESPACE, "--attacker", *targets
            )
        trace: list[float] = []
        deadline = time.monotonic() + 60 * minutes if minutes is not None else None
        done, next_sample = 1, time.monotonic()
        try:
            while (deadline is None or time.monotonic() < deadline) and (
                epochs is None or done < epochs
            ):
                epoch = asyncio.gather(*(ns.train(1, loaders[i]) for i, ns in enumerate(nss)))
                try:
                    await asyncio.wait_for(epoch, EPOCH_LIMIT_S)
                except asyncio.TimeoutError:
                    for task in asyncio.all_tasks():
                        task.print_stack(file=sys.stderr)
                    raise
                done += 1
                rss_max = max(rss_max, rss_mib())
                if time.monotonic() >= next_sample:
                    trace.append(round(rss_mib() - rss_start, 1))
                    next_sample += 10.0
        finally:
            if attacker is not None:
                attacker.kill()
                await attacker.wait()
            monitor.cancel()
        accuracy = [ns.learner.state.adapter.evaluate(test).accuracy for ns in nss]  # type: ignore[union-attr]
        dropped: dict[str, int] = {}
        for node in (a, b):
            for reason, count in node.stats.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + count
    return {
        "epochs": done,
        "accuracy": float(np.mean(accuracy)),
        "rss_start_mb": round(rss_start, 1),
        "rss_growth_mb": round(max(rss_max - rss_start, 0.0), 1),
        "max_stall_s": round(worst[0], 3),
        "rss_growth_trace_mb": trace,
        "dropped": dropped,
    }


# ---------------------------------------------------------------------- attacker side


def attacker(targets: list[str], namespace: str) -> None:
    """Mix the attacks against ``id=tcp://host:port`` targets until killed (~400 msgs/s)."""
    import zmq

    from scatterbrained.discovery.base import Beacon, NamespaceAd
    from scatterbrained.discovery.codec import encode_beacon
    from scatterbrained.wire.codec import encode
    from scatterbrained.wire.messages import (
        Hello,
        Message,
        ModelRequest,
        ModelUpdate,
        NamespaceInfo,
        Raw,
    )

    rng = random.Random(1)
    ids = [t.split("=", 1)[0] for t in targets]
    addresses = [t.split("=", 1)[1] for t in targets]
    context = zmq.Context()
    socks = []
    for address in addresses:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 256)
        sock.connect(address)
        socks.append(sock)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    session, seq = time.time_ns(), 0
    weights = {"0.weight": np.full((64, 64), -1e3, np.float32)}

    def send(message: Message) -> None:
        for sock in socks:
            with contextlib.suppress(zmq.Again):
                sock.send_multipart([bytes(f) for f in encode(message)], flags=zmq.NOBLOCK)

    def many_namespaces() -> tuple[NamespaceInfo, ...]:
        extra = tuple(NamespaceInfo(f"ns-{i}", "peer", 0, True) for i in range(63))
        return (NamespaceInfo(namespace, "peer", 0, True), *extra)

    while True:
        seq += 1
        mallory = f"mallory-{rng.randrange(50)}"
        kind = seq % 9
        if kind == 0:  # forged beacons of ever new ids
            beacon = Beacon(f"ghost-{seq}", "127.0.0.1", 9, (NamespaceAd(namespace, "peer"),))
            udp.sendto(encode_beacon(beacon), ("127.255.255.255", 47474))
        elif kind == 1:  # Hello with 64 namespaces and a victim's address
            send(Message(mallory, "", session, seq, Hello(VICTIM, many_namespaces(), None, True)))
        elif kind == 2:  # takeover: an honest id from another session
            victim = rng.choice(ids)
            hello = Hello(VICTIM, (NamespaceInfo(namespace, "peer", 0, True),), None, True)
            send(Message(victim, "", session + 1, seq, hello))
        elif kind == 3:  # 1 MiB raw payloads nobody receives
            send(Message(mallory, namespace, session, seq, Raw((bytes(2**20),))))
        elif kind == 4:  # model requests (answers go to the victim address)
            send(Message(mallory, namespace, session, seq, ModelRequest(seq, True)))
        elif kind == 5:  # poison: flipped weights claiming 10^9 samples
            update = ModelUpdate(seq, 10**9, "peer", weights, -1)
            send(Message(mallory, namespace, session, seq, update))
        elif kind == 6:  # counters past 2**62 (refused by the decoder)
            update = ModelUpdate(2**63, 2**63, "peer", {}, 2**63)
            with contextlib.suppress(Exception):  # the encoder may refuse it too
                send(Message(mallory, namespace, session, seq, update))
        elif kind == 7:  # malformed frames
            for sock in socks:
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart([rng.randbytes(rng.randrange(1, 400))], flags=zmq.NOBLOCK)
        else:  # TCP garbage
            host, port = addresses[seq % len(addresses)][6:].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1) as raw:
                raw.sendall(rng.randbytes(4096))
        time.sleep(0.0025)


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--attacker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        attacker(args.attacker, args.namespace)
        return
    import logging

    logging.basicConfig(level=logging.ERROR)
    if os.environ.get("SOAK_DEBUG"):
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    started = time.monotonic()
    attacked = asyncio.run(honest_pair(args.minutes, None, attack=True))
    clean = asyncio.run(honest_pair(None, attacked["epochs"], attack=False))
    drop = clean["accuracy"] - attacked["accuracy"]
    result = {
        "minutes": args.minutes,
        "epochs": attacked["epochs"],
        "accuracy_attacked": round(attacked["accuracy"], 4),
        "accuracy_clean": round(clean["accuracy"], 4),
        "accuracy_drop": round(drop, 4),
        "rss_start_mb": attacked["rss_start_mb"],
        "rss_growth_mb": attacked["rss_growth_mb"],
        "max_stall_s": attacked["max_stall_s"],
        "rss_growth_every_10s_mb": attacked["rss_growth_trace_mb"],
        "clean_rss_growth_mb": clean["rss_growth_mb"],
        "clean_max_stall_s": clean["max_stall_s"],
        "dropped": attacked["dropped"],
        "wall_s": round(time.monotonic() - started, 1),
    }
    result["ok"] = bool(
        drop < 0.02 and attacked["rss_growth_mb"] < 100 and attacked["max_stall_s"] < 0.5
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
