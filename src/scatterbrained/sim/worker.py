"""One simulated node as its own OS process (the ``process`` backend).

Run as ``python -m scatterbrained.sim.worker RUN/config.json INDEX [--restart]``. The worker
uses real ZeroMQ on 127.0.0.1 and UDP discovery in the loopback scope, trains free-running
(no lockstep with the others), and appends one JSON line per epoch to
``RUN/nodes/<id>.jsonl``. With ``--restart`` it resumes from its checkpoint and catches up
with ``sync_model`` before training the remaining epochs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ScatterbrainedError
from .config import SimConfig
from .experiment import NAMESPACE, Experiment, node_id

__all__ = ["main", "run_worker"]

logger = logging.getLogger(__name__)

#: Seconds a worker waits for the other nodes to appear before training anyway.
JOIN_TIMEOUT = 60.0
#: Most seconds a finished worker keeps serving while slower nodes finish their epochs.
MAX_LINGER_S = 600.0


async def run_worker(config: SimConfig, index: int, restart: bool) -> None:
    """Run node ``index`` of ``config`` until it has trained ``config.epochs`` epochs."""
    from ..node import Node

    os.environ["SCATTERBRAINED_DISCOVERY"] = "loopback"  # never leave the machine
    exp = Experiment.load(config)
    out = Path(config.out or ".")
    metrics = out / "nodes" / f"{node_id(index)}.jsonl"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    async with Node(node_id(index), host="127.0.0.1", discovery_scope="loopback") as node:
        ns = node.namespace(
            NAMESPACE,
            exp.build_model(),
            exp.create_optimizer(),
            checkpoint_dir=out / "checkpoints",
            **exp.namespace_options(index),
        )
        async with ns:
            others = config.nodes - 1
            try:
                await ns.wait_for_peers(1 if restart else others, timeout=JOIN_TIMEOUT)
            except ScatterbrainedError as exc:
                logger.warning("%s: starting with %d peers: %s", node.id, len(ns.peers), exc)
            if restart:
                try:
                    await ns.sync_model(timeout=JOIN_TIMEOUT)
                except ScatterbrainedError as exc:
                    logger.warning("%s: could not catch up: %s", node.id, exc)
            loader, test = exp.train_loader(index), exp.test_loader()
            while ns.epochs_done < config.epochs:
                started = time.monotonic()
                history = await ns.train(1, loader, test)
                _append(metrics, _row(node.id, index, history.last, started, restart))
                restart = False
            (out / "nodes" / f"{node.id}.done").touch()
            await _serve_until_stopped(ns, out / "stop")
            adapter = ns.learner.adapter
            assert adapter is not None  # the worker always builds its model
            final = await asyncio.to_thread(adapter.evaluate, test)
            result = {"node": node.id, "accuracy": final.accuracy, "loss": final.loss}
            _write_atomically(out / "nodes" / f"{node.id}.final.json", json.dumps(result))


async def _serve_until_stopped(ns: Any, stop: Path) -> None:
    """Keep federating (merging neighbours' updates) until the runner says all are done."""
    deadline = time.monotonic() + MAX_LINGER_S
    while not stop.exists() and time.monotonic() < deadline:  # noqa: ASYNC240 (tiny stat)
        await ns.serve(duration=0.5)


def _row(node: str, index: int, record: Any, started: float, restarted: bool) -> dict[str, Any]:
    return {
        "node": node,
        "index": index,
        "epoch": record.epoch,
        "alive": True,
        "event": "restarted" if restarted else None,
        "accuracy": record.val_accuracy,
        "loss": record.val_loss,
        "train_loss": record.train_loss,
        "mode": record.mode,
        "merged_from": list(record.merged_from),
        "bytes_sent": record.bytes_sent,
        "bytes_received": record.bytes_received,
        "wall_s": time.monotonic() - started,
        "peers": record.peers,
        "version": record.version,
    }


def _append(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` on an ``O_APPEND`` descriptor.

    The runner reads the file while it grows; one system call per line means it only ever sees
    whole lines plus at most one unfinished tail, and a SIGKILL cannot cut a line in two. A file
    left without a final newline (should that happen anyway) is closed off first, so the new
    row never glues onto a broken one.
    """
    data = (json.dumps(row) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m scatterbrained.sim.worker``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path, help="the run's config.json")
    parser.add_argument("index", type=int, help="node index (0-based)")
    parser.add_argument("--restart", action="store_true", help="resume and catch up")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s n{args.index:03d} %(name)s: %(message)s"
    )
    config = SimConfig.from_mapping(json.loads(args.config.read_text()))
    try:
        import torch

        torch.set_num_threads(max(1, config.threads))
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(run_worker(config, args.index, args.restart))
    return 0


if __name__ == "__main__":
    sys.exit(main())
