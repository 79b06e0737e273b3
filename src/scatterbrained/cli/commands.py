"""``scatterbrained node``, ``peers`` and ``keys``: real nodes for deployments."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigurationError
from ..export.base import SafeLoggers
from ._deps import is_missing_torch, missing_torch
from .dashboard import dashboard_options, namespace_dashboard
from .export_options import export_lines, make_loggers, node_export_options

__all__ = ["format_epoch", "keys", "load_object", "node", "peers"]


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted).

    Raises:
        ConfigurationError: the spec is malformed, the module or attribute is missing, or the
            module needs PyTorch and it is not installed (the message says how to install it).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"expected module:attribute, got {spec!r} (e.g. mypkg.models:make)"
        )
    if os.getcwd() not in sys.path:  # like `python -m`, find modules in the working folder
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if is_missing_torch(exc):
            raise missing_torch(f"{spec!r}", exc) from None
        raise ConfigurationError(f"cannot import {module_name!r} for {spec!r}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


@click.command()
@click.option("--namespace", "-n", required=True, help="Namespace (federation) name.")
@click.option(
    "--model", "model_spec", help="module:factory returning the model (omit to sync one)."
)
@click.option(
    "--data",
    "data_spec",
    help="module:factory returning (trainloader, validloader) or a trainloader.",
)
@click.option("--epochs", type=int, default=10, show_default=True, help="Local epochs.")
@click.option("--id", "node_id", help="Node id (default: random).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to bind.")
@click.option("--port", type=int, help="TCP port (default: a free one).")
@click.option("--bootstrap", multiple=True, help="tcp://host:port[#KEY] of a known peer (repeat).")
@click.option("--discovery", type=click.Choice(["lan", "loopback", "off"]), help="Discovery scope.")
@click.option("--topology", default="fully-connected", show_default=True, help="Topology spec.")
@click.option(
    "--mode",
    type=click.Choice(["peer", "seeding", "leeching", "offline"], case_sensitive=False),
    default="peer",
    show_default=True,
    help="Initial operating mode.",
)
@click.option("--policy", help="Policy spec, e.g. leech-until:samples=1000.")
@click.option("--aggregator", default="fedavg", show_default=True, help="Aggregator spec.")
@click.option(
    "--keys",
    "key_file",
    type=click.Path(path_type=Path),
    help="This node's secret key file (encrypts links; needs --allow).",
)
@click.option("--allow", multiple=True, help="Allowed peer public key or .pub file (repeat).")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), help="Resume/save here.")
@click.option(
    "--sync/--gossip",
    default=False,
    show_default=True,
    help="Synchronous rounds (wait for the neighbours) or asynchronous gossip.",
)
@click.option(
    "--round-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a synchronous round waits for its neighbours.",
)
@click.option(
    "--share-every",
    type=click.IntRange(min=1),
    help="Federate every N optimizer steps (default: once per epoch).",
)
@click.option(
    "--gossip-wait",
    type=click.FloatRange(min=0),
    help="Gossip: most seconds to wait for the neighbours' update of a round (default: adaptive).",
)
@click.option(
    "--sync-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Without --model: seconds to wait for a peer to sync the model from (default: no limit).",
)
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve after training.")
@node_export_options
@dashboard_options
def node(**options: Any) -> None:
    """Run one real node: train on local data, federate, then serve until Ctrl-C.

    Prints one line per epoch and every mode switch. With --keys, links are encrypted and
    only the peers given with --allow may connect. With --dashboard, a live page on
    127.0.0.1 shows this node, its peers and its curves. Ctrl-C leaves the federation
    cleanly (peers are told) and exits with status 0.
    """
    try:
        asyncio.run(_run_node(options))
    except KeyboardInterrupt:
        click.echo("stopped (Ctrl-C)")


def _keys_and_allowed(key_file: Path | None, allow: tuple[str, ...]) -> tuple[Any, Any]:
    """The node's key pair and allow-list, or one clear error (as ``sb.Node`` would raise)."""
    from ..transport.security import KeyPair, load_public_key

    if key_file is None:
        if allow:
            raise ConfigurationError(
                f"--allow needs --keys: {len(allow)} allowed key(s) given but this node has no "
                "key pair; create one with 'scatterbrained keys generate node.key' and pass "
                "--keys node.key"
            )
        return None, None
    if not allow:
        raise ConfigurationError(
            f"--keys {key_file} needs --allow: without an allow-list every peer is refused; "
            "pass --allow PEER_KEY (a public key or a peer's .pub file) once per peer"
        )
    try:
        keypair = KeyPair.load(key_file)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the key file {key_file}: {exc.strerror}; create it with "
            f"'scatterbrained keys generate {key_file}'"
        ) from None
    return keypair, [load_public_key(k) for k in allow]


def _check_graph_membership(topology: Any, node_id: str | None) -> None:
    """A node that no edge of a graph topology names would train alone: refuse to start."""
    from ..federation.topology import Graph

    if not isinstance(topology, Graph) or (node_id is not None and node_id in topology.nodes):
        return
    nodes = ", ".join(sorted(topology.nodes))
    given = f"--id {node_id}" if node_id is not None else "no --id (a random id)"
    raise ConfigurationError(
        f"the graph topology names nodes {nodes}, but this node has {given}: it would "
        "exchange with nobody; pass --id with one of those ids, or add an edge naming it"
    )


def _call_factory(spec: str, flag: str) -> Any:
    """Load and call the ``module:factory`` ``spec`` given as ``flag``; what it raises is one
    error line (a missing torch says how to install it)."""
    from ..sim.custom import raised_message

    factory = load_object(spec)
    try:
        return factory()
    except ImportError as exc:
        if is_missing_torch(exc):
            raise missing_torch(f"{spec!r}", exc) from None
        raise ConfigurationError(raised_message(flag, spec, exc)) from None
    except Exception as exc:
        raise ConfigurationError(raised_message(flag, spec, exc)) from None


def _check_model(model: Any, spec: str) -> Any:
    """``model`` when the namespace can adapt it, else one error naming ``--model``."""
    from ..adapters import ModelAdapter

    torch = sys.modules.get("torch")
    if (
        isinstance(model, ModelAdapter)
        or (torch is not None and isinstance(model, torch.nn.Module))
        or callable(getattr(model, "partial_fit", None))
    ):
        return model
    from ..sim.custom import describe

    raise ConfigurationError(
        f"--model {spec!r} returned {describe(model)}; return a torch.nn.Module, a "
        "ModelAdapter, or a scikit-learn estimator with partial_fit"
    )


async def _run_node(o: dict[str, Any]) -> None:
    from ..federation.aggregation import aggregator_from_spec
    from ..federation.policies import policy_from_spec
    from ..federation.topology import topology_from_spec

    keypair, allowed = _keys_and_allowed(o["key_file"], o["allow"])
    topology = topology_from_spec(o["topology"])
    _check_graph_membership(topology, o["node_id"])
    ns_options: dict[str, Any] = {
        "topology": topology,
        "mode": o["mode"],
        "aggregator": aggregator_from_spec(o["aggregator"]),
        "checkpoint_dir": o["checkpoint_dir"],
        "sync": o["sync"],
        "round_timeout": o["round_timeout"],
        "share_every": o["share_every"],
        "gossip_wait": o["gossip_wait"],
    }
    if o["policy"]:
        ns_options["policy"] = policy_from_spec(o["policy"])
    model = None
    if o["model_spec"]:
        model = _check_model(_call_factory(o["model_spec"], "--model"), o["model_spec"])
    loggers = make_loggers(
        o["tensorboard"], o["mlflow"], Path("runs"), run_name=None, experiment=o["namespace"]
    )
    with SafeLoggers(loggers):  # closed (runs ended, files flushed) when the node stops
        await _serve_node(o, model, ns_options, keypair, allowed, loggers)


async def _serve_node(
    o: dict[str, Any],
    model: Any,
    ns_options: dict[str, Any],
    keypair: Any,
    allowed: Any,
    loggers: list[Any],
) -> None:
    from ..node import Node

    async with Node(
        o["node_id"],
        o["host"],
        o["port"],
        bootstrap=o["bootstrap"],
        keys=keypair,
        allowed_keys=allowed,
        discovery_scope=o["discovery"],
    ) as sb_node:
        click.echo(f"node {sb_node.id} listening on {sb_node.address}")
        async with (
            sb_node.namespace(o["namespace"], model, **ns_options) as ns,
            namespace_dashboard(ns, o["dashboard"], o["dashboard_port"], o["epochs"]),
        ):
            ns.subscribe(lambda event: _echo_event(event, o["policy"]))
            if model is None:
                click.echo("no --model: waiting for a peer to sync the model from")
                await ns.sync_model(timeout=o["sync_timeout"])
                click.echo(f"model synced (version {ns.version})")
            if o["data_spec"]:
                data = _call_factory(o["data_spec"], "--data")
                trainloader, validloader = _loaders(data, o["data_spec"])
                await ns.train(o["epochs"], trainloader, validloader, loggers=loggers)
                for line in export_lines(loggers):
                    click.echo(line)
            if o["serve"]:
                click.echo("serving (Ctrl-C to stop)")
                await ns.serve()


def format_epoch(record: Any) -> str:
    """One line for an epoch's :class:`~scatterbrained.history.EpochRecord`.

    ``epoch 3: loss 0.4127 val_loss 0.391 val_acc 0.912 mode peer merged n001 n002`` (``-``
    where there is no value: no validation loader, nothing merged).
    """

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    merged = " ".join(record.merged_from) or "-"
    return (
        f"epoch {record.epoch}: loss {number(record.train_loss, 4)} "
        f"val_loss {number(record.val_loss, 3)} val_acc {number(record.val_accuracy, 3)} "
        f"mode {record.mode} merged {merged}"
    )


def _echo_event(event: Any, policy: str | None) -> None:
    """Print an epoch's line and every mode switch as they happen (a switch made by the
    policy names it as the user wrote it)."""
    from ..events import EpochDone, ModeSwitched

    if isinstance(event, EpochDone):
        click.echo(format_epoch(event.record))
    elif isinstance(event, ModeSwitched):
        reason = (
            f"policy {policy}" if policy and event.reason.startswith("policy ") else event.reason
        )
        click.echo(f"mode {event.old} -> {event.new} ({reason})")


def _loaders(data: Any, spec: str) -> tuple[Any, Any]:
    """``(trainloader, validloader)`` from what ``--data``'s factory returned.

    Raises:
        ConfigurationError: it is not a loader (an iterable of batches) or a pair of them.
    """
    train, valid = (
        (data[0], data[1]) if isinstance(data, tuple) and len(data) == 2 else (data, None)
    )
    loaders = (train,) if valid is None else (train, valid)
    if all(hasattr(x, "__iter__") and not isinstance(x, (str, bytes, dict)) for x in loaders):
        return train, valid
    from ..sim.custom import describe

    raise ConfigurationError(
        f"--data {spec!r} returned {describe(data)}; return (trainloader, validloader) or a "
        "trainloader (iterables of (inputs, labels) batches, e.g. torch DataLoaders)"
    )


@click.command()
@click.argument("namespace")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to listen.")
@click.option("--discovery", type=click.Choice(["lan", "loopback"]), help="Discovery scope.")
def peers(namespace: str, timeout: float, discovery: str | None) -> None:
    """List the nodes present in NAMESPACE (joins it as LEECHING to listen)."""
    from ..node import Node

    async def listen() -> list[tuple[Any, str]]:
        async with Node(discovery_scope=discovery) as sb_node:
            async with sb_node.namespace(namespace, mode="leeching") as ns:
                await asyncio.sleep(timeout)
                found = []
                for peer in sorted(ns.peers):
                    mode = ns.peer_mode(peer.id)
                    found.append((peer, mode.value if mode is not None else "?"))
                return found

    found = asyncio.run(listen())
    if not found:
        click.echo(f"no peers found in {namespace!r} within {timeout} s")
        return
    for peer, mode in found:
        click.echo(f"{peer.id}\t{peer.host}:{peer.port}\t{mode}")


@click.group()
def keys() -> None:
    """Manage CurveZMQ key pairs."""


@keys.command("generate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate(path: Path, force: bool) -> None:
    """Write a new key pair: PATH (secret, mode 0600) and PATH.pub (the public key file)."""
    from ..transport.security import KeyPair

    public_path = KeyPair.public_path(path)
    for target in (path, public_path):
        if target.exists() and not force:
            raise ConfigurationError(f"{target} exists; pass --force to overwrite it")
    pair = KeyPair.generate()
    try:
        written = pair.save(path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the key pair to {path}: {exc.strerror}; "
            "create the folder first or choose a writable path"
        ) from None
    click.echo(f"wrote the secret key: {path} (mode 0600, keep it private; --keys {path})")
    click.echo(f"wrote the public key: {written} (hand it to peers; --allow {written})")
    click.echo(f"public key: {pair.public}")
