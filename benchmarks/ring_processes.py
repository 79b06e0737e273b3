"""The digits set-up over 8 OS processes on a ring: real ZeroMQ on 127.0.0.1.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/ring_processes.py                       # ring and directed ring
    python benchmarks/ring_processes.py --topology ring --repeat 2

The set-up is ``digits8ring`` of :mod:`convergence` (this folder): ``load_digits``, X/16,
a stratified 80/20 split, a Dirichlet(0.5) label partition over 8 nodes, MLP 64-64-10,
``torch.manual_seed(0)`` before each model, Adam lr 1e-2, batch 16, 30 epochs. Each node is
its own Python process running one ``sb.Node`` through the public API: bound to 127.0.0.1,
discovery off, the other seven as bootstrap addresses (nothing leaves the machine). Every
node joins one namespace with default options and ``topology=Ring()`` (``ring``) or
``Ring(bidirectional=False)`` (``directed-ring``), waits for its 7 peers and a start line from
this process (so all start together), runs ``await ns.train(30, loader)`` once and reports
its final test accuracy; it stays a member (without federating) until told to leave, so no
one leaves while a neighbour still trains.

Printed: one JSON line per run, then ``{"runs": [...], "centralized": accuracy}``. A run
has ``topology``, ``mode``, ``mean_accuracy``, ``worst_accuracy``, ``average_model_accuracy``
(the test accuracy of the uniform mean of the 8 final models: what full consensus would
give), ``spread`` (best minus worst node) and ``wall_s`` (slowest node's ``train``).
``--modes`` takes the modes of :mod:`convergence` (``default``, ``sync``, ``plainmix``...).
Every run has a deadline (``--timeout``); the children are killed when the run ends, however
it ends, and a child whose parent is gone (its stdin closes) exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import convergence  # this folder (python puts the script's folder on sys.path)
import numpy as np

NODES = 8
TOPOLOGIES = ("ring", "directed-ring")
#: Seconds a child waits for its peers to appear.
PEER_WAIT_S = 120.0


# ---------------------------------------------------------------------- child


class Parent:
    """The parent's lines on stdin, and whether it is gone (stdin closed)."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.gone = asyncio.Event()

    async def listen(self) -> None:
        """Queue stdin's lines until it closes (the parent quit or died), then set ``gone``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            self.lines.put_nowait(line.decode().strip())
        self.gone.set()


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def child(
    parent: Parent, index: int, ports: list[int], topology: str, mode: str, name: str, out: Path
) -> None:
    """One node: join, wait for the start line, train 30 epochs, report, stay until told."""
    import torch

    import scatterbrained as sb

    torch.set_num_threads(1)
    task = convergence.digits8ring()
    part = convergence.dirichlet_partition(task.y_train, nodes=NODES)[index]
    ring = sb.topology.Ring(bidirectional=topology == "ring")
    peers = [f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports) if i != index]
    model = convergence.build_model(task)
    data = convergence.loader(task, part, index)
    node = sb.Node(
        f"n{index}", host="127.0.0.1", port=ports[index], discovery_scope="off", bootstrap=peers
    )
    async with (
        node,
        node.namespace(name, model, task.optimizer, topology=ring, **convergence.MODES[mode]) as ns,
    ):
        await ns.wait_for_peers(NODES - 1, timeout=PEER_WAIT_S)
        _say(event="ready", node=index)
        await parent.lines.get()  # the start line
        started = time.monotonic()
        await ns.train(task.epochs, data)
        wall = time.monotonic() - started
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        np.savez(out / f"n{index}.npz", **weights)
        _say(event="done", node=index, accuracy=convergence.accuracy(model, task), wall_s=wall)
        await parent.lines.get()  # leave when told (child_main ends it if the parent dies)


async def child_main(args: argparse.Namespace) -> None:
    """Run :func:`child` until it ends, the parent is gone, or ``--timeout`` passes."""
    parent = Parent()
    ports = [int(p) for p in args.ports.split(",")]
    listen = asyncio.ensure_future(parent.listen())
    gone = asyncio.ensure_future(parent.gone.wait())
    work = asyncio.ensure_future(
        child(parent, args.worker, ports, args.topology, args.modes, args.name, Path(args.out))
    )
    done, _ = await asyncio.wait(
        {gone, work}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
    )
    for task in (listen, gone, work):
        task.cancel()
    await asyncio.gather(listen, gone, work, return_exceptions=True)
    if work in done:
        work.result()


# ---------------------------------------------------------------------- parent


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


async def run_once(topology: str, mode: str, timeout: float) -> dict[str, Any]:
    """One run of 8 processes; every child is gone when this returns or raises."""
    ports = free_ports(NODES)
    name = f"ring-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="ring-processes-") as out:
        procs: list[asyncio.subprocess.Process] = []
        try:
            async with asyncio.timeout(timeout):
                for i in range(NODES):
                    procs.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            __file__,
                            "--worker",
                            str(i),
                            "--ports",
                            ",".join(map(str, ports)),
                            "--topology",
                            topology,
                            "--modes",
                            mode,
                            "--name",
                            name,
                            "--out",
                            out,
                            "--timeout",
                            str(timeout),
                            stdin=asyncio.subprocess.PIPE,
                            stdout=asyncio.subprocess.PIPE,
                            env=env,
                        )
                    )
                await asyncio.gather(*(_expect(p, "ready") for p in procs))
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write(b"go\n")
                done = await asyncio.gather(*(_expect(p, "done") for p in procs))
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write(b"quit\n")
                await asyncio.gather(*(p.wait() for p in procs))
            models = [dict(np.load(Path(out) / f"n{i}.npz")) for i in range(NODES)]
        finally:
            await _kill(procs)
    accuracies = [d["accuracy"] for d in done]
    return {
        "topology": topology,
        "mode": mode,
        "mean_accuracy": round(float(np.mean(accuracies)), 4),
        "worst_accuracy": round(float(np.min(accuracies)), 4),
        "average_model_accuracy": round(_mean_model_accuracy(models), 4),
        "spread": round(float(np.max(accuracies) - np.min(accuracies)), 4),
        "wall_s": round(max(d["wall_s"] for d in done), 1),
    }


async def _expect(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a node exited (code {await proc.wait()}) before {event!r}")
        with contextlib.suppress(json.JSONDecodeError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("event") == event:
                return message


async def _kill(procs: list[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            p.kill()
    for p in procs:
        await p.wait()


def _mean_model_accuracy(models: list[dict[str, np.ndarray]]) -> float:
    import torch

    task = convergence.digits8ring()
    model = convergence.build_model(task)
    mean = {k: torch.from_numpy(np.mean([m[k] for m in models], axis=0)) for k in models[0]}
    model.load_state_dict(mean)
    return convergence.accuracy(model, task)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=[*TOPOLOGIES, "both"], default="both")
    parser.add_argument("--modes", default="default", help="comma-separated convergence modes")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--no-centralized", action="store_true")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        asyncio.run(child_main(args))
        return
    topologies = TOPOLOGIES if args.topology == "both" else (args.topology,)
    rows = []
    for _ in range(args.repeat):
        for topology in topologies:
            for mode in args.modes.split(","):
                row = asyncio.run(run_once(topology, mode, args.timeout))
                rows.append(row)
                print(json.dumps(row), flush=True)
    central = None
    if not args.no_centralized:
        central = convergence.centralized(convergence.digits8ring())["mean_accuracy"]
    print(json.dumps({"runs": rows, "centralized": central}))


if __name__ == "__main__":
    main()
