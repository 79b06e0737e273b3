"""Simulation configuration: one dataclass, loadable from TOML, strictly validated.

Every mistake (an unknown key, a bad value, an unknown topology) becomes one
:class:`~scatterbrained.errors.ConfigurationError` whose message names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..types import OperatingMode
from .custom import as_dataset, describe, is_spec
from .datasets import Dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["BACKENDS", "FaultEvent", "SimConfig", "config_keys", "load_config"]

#: How nodes are run: all in one process over the in-memory transport, all in one process
#: over real loopback ZeroMQ, one OS process per node (ZeroMQ + UDP loopback discovery), or
#: one Ray actor per node (ZeroMQ + bootstrap lists; a local Ray instance or a cluster).
BACKENDS = ("memory", "zmq", "process", "ray")
FAULT_ACTIONS = ("kill", "restart", "pause", "resume")


@dataclass(frozen=True)
class FaultEvent:
    """A scheduled fault: ``action`` happens to node ``node`` after epoch ``epoch``.

    Attributes:
        epoch: epochs completed (by the network) when the fault happens (0 = before training).
        node: node index (0-based).
        action: ``kill`` (crash: no goodbye), ``restart`` (start again, restore the
            checkpoint, ``sync_model`` from a peer), ``pause`` (stop training and go OFFLINE),
            ``resume``.
    """

    epoch: int
    node: int
    action: str


@dataclass(frozen=True)
class SimConfig:
    """Everything needed to reproduce a simulated federation (written as ``config.json``).

    Attributes:
        nodes: number of nodes.
        epochs: local epochs per node.
        dataset: ``digits``, ``fashion-mnist``, a loader ``"pkg.module:load"``, an ``.npz``
            file, or (from Python) in-memory data: a
            :class:`~scatterbrained.sim.datasets.Dataset` such as ``from_arrays(x, y)``,
            ``(x, y)`` or ``(x_train, y_train, x_test, y_test)`` (see
            :mod:`scatterbrained.sim.custom` for the loader's contract).
        train_limit: use only the first N training samples (None = all).
        test_limit: evaluate on the first N test samples (None = all).
        partition: ``iid``, ``dirichlet:alpha=0.5`` or ``shards:k=2``.
        model: ``mlp``, ``cnn``, ``logreg``, or your factory ``"pkg.module:make_model"``
            (called with the keywords it declares among ``input_shape``, ``input_dim``,
            ``num_classes`` and ``hidden``; returns a ``torch.nn.Module``).
        hidden: hidden units of ``mlp``.
        topology: topology spec (``ring``, ``fully-connected``, ``star``,
            ``random-regular:k=4``, ``grid:cols=4``, ...).
        aggregator: aggregator spec (``fedavg``, ``median``, ``krum:f=1``, ...).
        mode: initial mode of every node.
        modes: per-node initial modes, ``{"3": "seeding"}``.
        policies: per-node policies, ``{"0": "leech-until:samples=500"}``.
        attacks: per-node Byzantine attacks, ``{"3": "sign-flip:scale=10"}`` (see
            :mod:`scatterbrained.federation.attacks`; memory and zmq backends).
        faults: scheduled faults, ``[{epoch = 5, node = 3, action = "kill"}]`` (actions
            ``kill``, ``restart``, ``pause``, ``resume``; see :class:`FaultEvent`).
        churn_rate: probability per node and epoch of a random kill (restarted 2 epochs later).
        drop_rate: fraction of messages dropped (memory backend).
        delay_ms: delay of every message in milliseconds (memory backend).
        backend: ``memory``, ``zmq``, ``process`` or ``ray`` (see ``docs/ray.md``).
        sync: synchronous rounds (reproducible in the memory backend) instead of gossip.
        round_timeout: seconds a round waits for neighbours.
        share_every: federate every this many optimizer steps instead of once per epoch.
        gossip_wait: in gossip, the most seconds a node waits for its in-neighbours' update
            of the same round; unset: adaptive and stale-synchronous, as a namespace's
            default (keeps free-running processes in pace); ``0``: merge what is there.
        batch_size: training batch size.
        lr: Adam learning rate.
        seed: seed of the data split, model init, batch order, message drops and churn
            (``random-regular`` takes its own ``seed=`` parameter).
        centralized: also train one model on all the data as a baseline.
        local_only: also train every node alone as a baseline.
        out: run folder (created; default ``runs/<timestamp>``).
        threads: torch threads per process (per Ray actor).
        ray_address: the Ray cluster to run on (``ray`` backend), e.g. ``"auto"`` or
            ``"10.0.0.5:6379"``; unset: a local Ray instance started (and stopped) by the run.
        ray_num_cpus_per_node: CPUs Ray reserves for each node's actor (fractions are fine).
        ray_num_gpus_per_node: GPUs Ray reserves for each node's actor (fractions are fine).
    """

    nodes: int = 8
    epochs: int = 10
    dataset: str | Dataset = "digits"
    train_limit: int | None = None
    test_limit: int | None = None
    partition: str = "dirichlet:alpha=0.5"
    model: str = "mlp"
    hidden: int = 64
    topology: str = "ring"
    aggregator: str = "fedavg"
    mode: str = "peer"
    modes: Mapping[str, str] = field(default_factory=dict)
    policies: Mapping[str, str] = field(default_factory=dict)
    attacks: Mapping[str, str] = field(default_factory=dict)
    faults: tuple[FaultEvent, ...] = ()
    churn_rate: float = 0.0
    drop_rate: float = 0.0
    delay_ms: float = 0.0
    backend: str = "memory"
    sync: bool = True
    round_timeout: float = 30.0
    share_every: int | None = None
    gossip_wait: float | None = None
    batch_size: int = 32
    lr: float = 0.003
    seed: int = 0
    centralized: bool = False
    local_only: bool = False
    out: str | None = None
    threads: int = 1
    ray_address: str | None = None
    ray_num_cpus_per_node: float = 1.0
    ray_num_gpus_per_node: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, (str, Dataset)):  # (x, y), a tuple of four arrays...
            seed = self.seed if isinstance(self.seed, int) else 0
            object.__setattr__(self, "dataset", as_dataset(self.dataset, seed=seed))
        _check_ranges(self)
        _check_faults(self)
        _check_node_tables(self)
        _check_specs(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_mapping` reads back.

        In-memory data is only named (``"<in-memory dataset 'custom'>"``), never written out:
        :func:`~scatterbrained.sim.runner.run_simulation` saves it as ``dataset.npz`` in the
        run folder and writes that path into ``config.json``.
        """
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.dataset, Dataset):
            data["dataset"] = f"<in-memory dataset {self.dataset.name!r}>"
        data["faults"] = [dataclasses.asdict(f) for f in self.faults]
        data["modes"] = dict(self.modes)
        data["policies"] = dict(self.policies)
        data["attacks"] = dict(self.attacks)
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SimConfig:
        """Build a config from a mapping (TOML table, JSON object, CLI flags).

        Raises:
            ConfigurationError: an unknown key (with a suggestion) or an invalid value.
        """
        valid = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
                raise ConfigurationError(f"unknown config key {key!r}; {hint}")
            values[name] = value
        faults = values.get("faults", ())
        _check(
            isinstance(faults, (list, tuple)),
            f"faults = {describe(faults)} is not a list",
            'write faults = [{epoch = 5, node = 3, action = "kill"}]',
        )
        values["faults"] = tuple(_fault(f) for f in faults)
        for table in ("modes", "policies", "attacks"):
            if table in values:
                _check(
                    isinstance(values[table], Mapping),
                    f"{table} = {describe(values[table])} is not a table",
                    f'write {table} = {{"3" = "..."}} (node index -> value)',
                )
                values[table] = {str(k): str(v) for k, v in values[table].items()}
        _check_types(values)
        return cls(**values)

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with some fields changed (validated again; in-memory data is kept)."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return SimConfig.from_mapping({**current, **changes})


def load_config(path: str | Path) -> SimConfig:
    """Read a TOML (or JSON) simulation config.

    Raises:
        ConfigurationError: the file is missing, not valid TOML/JSON, or has a bad value.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigurationError(f"config file {source} does not exist; check the path")
    text = source.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if source.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{source} is not valid TOML/JSON: {exc}") from None
    return SimConfig.from_mapping(data)


def config_keys() -> list[tuple[str, str, str]]:
    """Every key of :class:`SimConfig`, in order: ``(key, default as TOML, description)``.

    The description is the key's entry in the class docstring; an optional key without a
    default shows ``(unset)``.
    """
    docs = _attribute_docs(SimConfig.__doc__ or "")
    keys = []
    for item in dataclasses.fields(SimConfig):
        factory = item.default_factory
        default: Any = factory() if callable(factory) else item.default
        keys.append((item.name, _toml_value(default), docs.get(item.name, "")))
    return keys


def _toml_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    return json.dumps(value)  # true/false, numbers, "strings"


def _attribute_docs(doc: str) -> dict[str, str]:
    """``name -> text`` of a Google-style ``Attributes:`` section (continuations joined)."""
    docs: dict[str, str] = {}
    current: str | None = None
    inside = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            inside = True
            continue
        if not inside or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        name, sep, text = stripped.partition(": ")
        if sep and indent <= 8 and name.isidentifier():
            current = name
            docs[name] = text
        elif current is not None:
            docs[current] += " " + stripped
    return {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v.replace("``", "")) for k, v in docs.items()}


def _check_ranges(config: SimConfig) -> None:
    _check(config.nodes >= 1, f"nodes must be >= 1, got {config.nodes}", "set nodes = 8")
    _check(config.epochs >= 1, f"epochs must be >= 1, got {config.epochs}", "set epochs = 10")
    _check(
        config.backend in BACKENDS,
        f"unknown backend {config.backend!r}",
        f"use one of {', '.join(BACKENDS)}",
    )
    for name in ("churn_rate", "drop_rate"):
        value = getattr(config, name)
        _check(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}", f"fix {name}")
    _check(config.delay_ms >= 0, f"delay_ms must be >= 0, got {config.delay_ms}", "fix delay_ms")
    _check(
        config.gossip_wait is None or config.gossip_wait >= 0,
        f"gossip_wait must be >= 0 seconds, got {config.gossip_wait}",
        "fix gossip_wait",
    )
    _check(config.lr > 0, f"lr must be > 0, got {config.lr}", "fix lr")
    _check_ray(config)
    _check(config.round_timeout > 0, "round_timeout must be > 0 s", "fix round_timeout")
    for name in ("batch_size", "threads", "hidden"):
        value = getattr(config, name)
        _check(value >= 1, f"{name} must be >= 1, got {value}", f"fix {name}")
    for name in ("train_limit", "test_limit", "share_every"):
        value = getattr(config, name)
        _check(
            value is None or value >= 1,
            f"{name} must be >= 1, got {value}",
            f"fix {name} or leave it out ({_UNSET_MEANS[name]})",
        )
    # Shards differ in size, so nodes take different numbers of steps per epoch: a node
    # still training would wait round_timeout at each extra round for neighbours that finished.
    _check(
        not (config.sync and config.share_every is not None),
        f"sync = true cannot be combined with share_every = {config.share_every}: nodes with "
        "different shard sizes run different numbers of rounds and stall for round_timeout",
        "set sync = false (gossip) to share every few steps, or leave share_every out",
    )


def _check_ray(config: SimConfig) -> None:
    for name in ("ray_num_cpus_per_node", "ray_num_gpus_per_node"):
        value = getattr(config, name)
        _check(
            value >= 0 and math.isfinite(value),
            f"{name} must be a number >= 0, got {value}",
            f"fix {name} (fractions such as 0.5 are fine)",
        )
    _check(
        config.ray_address is None or config.ray_address.strip() != "",
        "ray_address is empty",
        'leave it out for a local Ray instance, or write ray_address = "auto" or "host:6379"',
    )


def _check_faults(config: SimConfig) -> None:
    for fault in config.faults:
        _check(
            fault.action in FAULT_ACTIONS,
            f"fault action {fault.action!r} is unknown",
            f"use one of {', '.join(FAULT_ACTIONS)}",
        )
        _check(
            0 <= fault.node < config.nodes,
            f"fault names node {fault.node} but there are {config.nodes} nodes "
            f"(0..{config.nodes - 1})",
            "fix the fault's node index",
        )
        _check(
            0 <= fault.epoch <= config.epochs,
            f"fault at epoch {fault.epoch} is outside 0..{config.epochs}",
            "fix the fault's epoch",
        )


def _check_node_tables(config: SimConfig) -> None:
    for table in ("modes", "policies", "attacks"):
        for key in getattr(config, table):
            _check(
                str(key).isdigit() and int(key) < config.nodes,
                f"{table} has key {key!r}, expected a node index 0..{config.nodes - 1}",
                f'write {table} = {{"0" = "..."}}',
            )


def _check_specs(config: SimConfig) -> None:
    """Build every spec once, so a typo fails here and not after the nodes started."""
    from ..federation.aggregation import aggregator_from_spec
    from ..federation.policies import policy_from_spec
    from ..federation.topology import check_node_ids, topology_from_spec
    from .models import MODEL_FACTORIES
    from .partition import parse_partition_spec

    ids = [f"n{i:03d}" for i in range(config.nodes)]
    check_node_ids(topology_from_spec(config.topology), ids, name=f"topology = {config.topology!r}")
    aggregator_from_spec(config.aggregator)
    parse_partition_spec(config.partition)
    _check(
        config.model.strip().lower() in MODEL_FACTORIES or is_spec(config.model),
        f"unknown model {config.model!r}",
        f"use one of {', '.join(MODEL_FACTORIES)}, or your own factory as module:function "
        '(e.g. model = "mymodel:make_model")',
    )
    if isinstance(config.dataset, str) and ":" in config.dataset:
        _check(
            is_spec(config.dataset),
            f"dataset = {config.dataset!r} is not module:function",
            'write e.g. dataset = "mydata:load" (a function in mydata.py returning the data)',
        )
    _check_mode("mode", config.mode)
    for key, mode in config.modes.items():
        _check_mode(f'modes."{key}"', mode)
    for key, spec in config.policies.items():
        try:
            policy_from_spec(spec)
        except ConfigurationError as exc:
            raise ConfigurationError(f'policies."{key}": {exc}') from None
    _check_attacks(config)


def _check_attacks(config: SimConfig) -> None:
    from ..federation.attacks import attack_from_spec

    for key, spec in config.attacks.items():
        try:
            attack_from_spec(spec)
        except ConfigurationError as exc:
            raise ConfigurationError(f'attacks."{key}": {exc}') from None
    _check(
        not config.attacks or config.backend in ("memory", "zmq"),
        f"attacks need the memory or zmq backend, not {config.backend!r}",
        'set backend = "memory" (or "zmq")',
    )


def _check_mode(where: str, mode: str) -> None:
    try:
        OperatingMode.parse(mode)
    except ValueError as exc:
        raise ConfigurationError(f"{where} = {mode!r}: {exc}") from None


def _check(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigurationError(f"{problem}; {fix}")


def _fault(entry: Any) -> FaultEvent:
    if isinstance(entry, FaultEvent):
        return entry
    _check(
        isinstance(entry, Mapping) and {"epoch", "node", "action"} <= set(entry),
        f"fault {entry!r} needs keys epoch, node and action",
        'write faults = [{epoch = 5, node = 3, action = "kill"}]',
    )
    extra = set(entry) - {"epoch", "node", "action"}
    _check(not extra, f"fault has unknown keys {sorted(extra)}", "use epoch, node and action")
    for key in ("epoch", "node"):
        value = entry[key]
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            f"fault {key} = {value!r} is not an integer",
            f"write {key} = 3 (a whole number) in {dict(entry)!r}",
        )
    return FaultEvent(int(entry["epoch"]), int(entry["node"]), str(entry["action"]))


_UNSET_MEANS = {
    "train_limit": "all samples",
    "test_limit": "all samples",
    "share_every": "share once per epoch",
    "gossip_wait": "adaptive",
}
_OPTIONAL = ("out", "share_every", "train_limit", "test_limit", "gossip_wait", "ray_address")
_TYPES: dict[str, tuple[type, ...]] = {
    "train_limit": (int,),
    "test_limit": (int,),
    "nodes": (int,),
    "epochs": (int,),
    "hidden": (int,),
    "share_every": (int,),
    "gossip_wait": (int, float),
    "batch_size": (int,),
    "seed": (int,),
    "threads": (int,),
    "lr": (int, float),
    "round_timeout": (int, float),
    "churn_rate": (int, float),
    "drop_rate": (int, float),
    "delay_ms": (int, float),
    "ray_num_cpus_per_node": (int, float),
    "ray_num_gpus_per_node": (int, float),
    "ray_address": (str,),
    "partition": (str,),
    "model": (str,),
    "topology": (str,),
    "aggregator": (str,),
    "mode": (str,),
    "backend": (str,),
    "sync": (bool,),
    "centralized": (bool,),
    "local_only": (bool,),
}


def _check_types(values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        expected = _TYPES.get(name)
        if expected is None or (value is None and name in _OPTIONAL):
            continue
        ok = isinstance(value, expected) and not (bool not in expected and isinstance(value, bool))
        _check(
            ok,
            f"{name} = {describe(value)} has the wrong type",
            f"expected {' or '.join(t.__name__ for t in expected)}",
        )
