"""``scatterbrained demo`` and ``scatterbrained simulate``."""

from __future__ import annotations

import difflib
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigurationError
from ..federation.topology import check_node_ids, topology_from_spec
from ..sim.config import SimConfig, config_keys, load_config
from ..sim.datasets import default_fashion_mnist_root
from ..sim.experiment import node_id
from ..sim.runner import RunResult, default_out, run_simulation
from ._deps import require_torch
from .dashboard import dashboard_options, run_dashboard, serve_until_interrupted
from .export_options import export_lines, export_options, make_loggers, pop_export_flags
from .progress import LiveProgress, print_summary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULT_CONFIG", "demo", "demo_config", "parse_settings", "simulate"]

#: The config file ``scatterbrained simulate`` reads when it is given none and this file is
#: in the working folder (``scatterbrained new`` writes one).
DEFAULT_CONFIG = "scatterbrained.toml"

_OVERRIDES = [
    click.option("--nodes", type=int, help="Number of nodes."),
    click.option("--epochs", type=int, help="Local epochs per node."),
    click.option(
        "--dataset", help="digits, fashion-mnist, a .npz file, or your loader module:function."
    ),
    click.option(
        "--topology", help="ring, fully-connected, star, random-regular:k=4, grid:cols=4, ..."
    ),
    click.option(
        "--out", type=click.Path(path_type=Path), help="Run folder (default runs/<time>)."
    ),
]


def _with_overrides(func: Any) -> Any:
    for option in reversed(_OVERRIDES):
        func = option(func)
    return func


def fashion_mnist_available() -> bool:
    """True when the Fashion-MNIST IDX files are installed."""
    root = default_fashion_mnist_root()
    return any(root.glob("train-images-idx3-ubyte*")) and any(root.glob("t10k-labels-idx1-ubyte*"))


#: Training samples of the demo's datasets (digits: 75% of 1,797; Fashion-MNIST: 60,000).
_DEMO_TRAIN_SAMPLES = {"digits": 1347, "fashion-mnist": 60000}
#: The demo's batch size and Adam learning rate for nodes with plenty of data.
_DEMO_BATCH, _DEMO_LR = (
    {"digits": 32, "fashion-mnist": 32},
    {"digits": 0.003, "fashion-mnist": 0.002},
)
#: Optimizer steps per epoch the demo's presets aim for on every node.
_DEMO_STEPS = 8


def _is_fashion(dataset: str) -> bool:
    return dataset.replace("_", "-").lower() == "fashion-mnist"


def demo_preset(dataset: str, nodes: int) -> tuple[int, float]:
    """Batch size and learning rate so that ``nodes`` nodes sharing ``dataset`` still learn.

    More nodes means less data each: at batch 32, 64 nodes on digits (21 samples each) made
    one optimizer step an epoch and reached 0.47. The batch shrinks to give each node about
    :data:`_DEMO_STEPS` steps an epoch (between 4 and 32), and the learning rate grows as
    ``(32 / batch) ** 0.6`` (64 nodes on digits: batch 4, lr 0.0104, 0.86 after 20 epochs).
    """
    name = "fashion-mnist" if _is_fashion(dataset) else "digits"
    per_node = _DEMO_TRAIN_SAMPLES[name] // max(1, nodes)
    batch = max(4, min(_DEMO_BATCH[name], per_node // _DEMO_STEPS))
    lr = _DEMO_LR[name] * (_DEMO_BATCH[name] / batch) ** 0.6
    return batch, round(lr, 4)


def demo_config(dataset: str | None = None, nodes: int = 16) -> SimConfig:
    """The demo: 16 nodes, random 4-regular graph, Dirichlet(0.5) skew, one leecher, churn;
    batch size and learning rate from :func:`demo_preset` for the number of nodes."""
    chosen = dataset or ("fashion-mnist" if fashion_mnist_available() else "digits")
    fashion = _is_fashion(chosen)
    batch, lr = demo_preset(chosen, nodes)
    return SimConfig(
        nodes=nodes,
        epochs=12 if fashion else 20,
        dataset=chosen,
        test_limit=2000 if fashion else None,
        partition="dirichlet:alpha=0.5",
        model="cnn" if fashion else "mlp",
        topology="random-regular:k=4",
        aggregator="fedavg",
        policies={"0": "leech-until:samples=2000" if fashion else "leech-until:samples=200"},
        modes={"0": "leeching"},
        faults=_demo_faults(12 if fashion else 20) if nodes > 5 else (),
        backend="memory",
        sync=True,
        batch_size=batch,
        lr=lr,
        centralized=True,
    )


def _demo_faults(epochs: int) -> tuple[Any, ...]:
    from ..sim.config import FaultEvent

    half = epochs // 2
    return (FaultEvent(half, 5, "kill"), FaultEvent(min(half + 2, epochs - 1), 5, "restart"))


def _apply_overrides(
    config: SimConfig, overrides: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> SimConfig:
    """Apply command-line flags, then ``--set`` settings.

    Per-node settings and faults of the file follow a smaller network (those given with
    ``--set`` are taken as they are and validated).
    """
    changes = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items() if v is not None
    }
    settings = dict(settings or {})
    if not changes and not settings:
        return config
    data = {**config.to_json(), **changes, **settings}
    nodes, epochs = data["nodes"], data["epochs"]
    if not (isinstance(nodes, int) and isinstance(epochs, int)):
        return SimConfig.from_mapping(data)  # the wrong type, said by the validation
    for table in ("modes", "policies", "attacks"):
        if table not in settings and isinstance(data[table], Mapping):
            data[table] = {k: v for k, v in data[table].items() if _index_below(k, nodes)}
    if "faults" not in settings:
        data["faults"] = [
            {**fault, "epoch": min(int(fault["epoch"]), epochs)}
            for fault in data["faults"]
            if int(fault["node"]) < nodes
        ]
    return SimConfig.from_mapping(data)


def _index_below(key: str, nodes: int) -> bool:
    return key.isdigit() and int(key) < nodes


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set KEY=VALUE`` items; VALUE is a TOML value (a bare word is a string).

    ``none`` unsets an optional key (``--set train_limit=none``).

    Raises:
        ConfigurationError: an item without ``=``, or a key SimConfig does not have (with
            the closest keys).
    """
    keys = [name for name, _, _ in config_keys()]
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigurationError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=0.01 (see --list-keys)"
            )
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise ConfigurationError(
                f"--set {item!r}: unknown config key {key!r}; {hint}(--list-keys lists every key)"
            )
        settings[name] = _toml_value(raw.strip())
    return settings


def _toml_value(raw: str) -> Any:
    if raw.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word: digits, runs/x, mymodule:make_model


def _list_keys(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--list-keys``: print every config key with its default and meaning, then exit."""
    if not value or ctx.resilient_parsing:
        return
    click.echo("Every config key (TOML file, or --set KEY=VALUE; `-` and `_` are the same):\n")
    width = max(len(f"{name} = {default}") for name, default, _ in config_keys()) + 2
    width = min(width, 40)
    for name, default, text in config_keys():
        head = f"  {name} = {default}"
        lines = textwrap.wrap(text, 96 - width) or [""]
        if len(head) >= width:
            click.echo(head)
            head = ""
        click.echo(f"{head:<{width}}{lines[0]}")
        for line in lines[1:]:
            click.echo(f"{'':<{width}}{line}")
    ctx.exit(0)


def _config_file(given: Path | None) -> Path | None:
    """The config file to read: the one given, else ./scatterbrained.toml when it exists."""
    if given is not None:
        return given
    default = Path(DEFAULT_CONFIG)
    if default.is_file():
        click.echo(f"config: {default} (found in the working folder)")
        return default
    return None


def check_runnable(config: SimConfig) -> None:
    """Checks that need no data, run before anything prints or the run folder exists.

    Raises:
        ConfigurationError: the topology names node ids that no simulated node has
            (they are ``n000``, ``n001``, ...), or PyTorch (or, for the ``ray`` backend,
            Ray) is not installed.
    """
    ids = [node_id(i) for i in range(config.nodes)]
    topology = topology_from_spec(config.topology)
    check_node_ids(topology, ids, name=f"topology = {config.topology!r}")
    require_torch(f"the simulator's model {config.model!r}")
    if config.backend == "ray":
        from ..sim.ray_actors import require_ray

        require_ray()


def _run(
    config: SimConfig,
    exports: tuple[str | None, str | None] = (None, None),
    dashboard: bool = False,
    dashboard_port: int = 0,
) -> RunResult:
    check_runnable(config)
    if (dashboard or any(flag is not None for flag in exports)) and not config.out:
        # the run folder is chosen now: the dashboard follows it, the exports go inside
        config = config.replace(out=str(default_out()))
    loggers = _export_loggers(config, exports)
    with run_dashboard(Path(config.out or "."), dashboard, dashboard_port) as server:
        with LiveProgress(config) as progress:
            result = run_simulation(
                config, on_epoch=progress.epoch, on_status=progress.status, loggers=loggers
            )
        print_summary(result)
        for line in export_lines(loggers):
            click.echo(line)
        if server is not None:
            serve_until_interrupted(server.url)
    return result


def _export_loggers(config: SimConfig, exports: tuple[str | None, str | None]) -> list[Any]:
    """The ``--tensorboard`` / ``--mlflow`` loggers; their defaults go into the run folder."""
    if all(flag is None for flag in exports):
        return []
    out = Path(config.out or default_out())
    params = {k: v for k, v in config.to_json().items() if k != "out"}
    return make_loggers(*exports, out, run_name=out.name, params=params)


@click.command()
@_with_overrides
@export_options
@dashboard_options
def demo(dashboard: bool, dashboard_port: int, **overrides: Any) -> None:
    """Run the demo federation (no arguments needed).

    16 nodes on Fashion-MNIST when it is installed (else scikit-learn digits), a random
    4-regular topology, Dirichlet(0.5) label skew, node n000 starting LEECHING under a
    policy, and node n005 killed halfway and restarted two epochs later. Prints live
    progress, then a summary, the centralized baseline and the paths of the run folder and
    plots. With --dashboard, a live page shows the run (and stays up until Ctrl-C).
    """
    dataset = overrides.pop("dataset", None)
    if dataset is None and not fashion_mnist_available():
        click.echo(
            "note: Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist); "
            "using scikit-learn digits"
        )
    nodes = overrides.get("nodes") or 16
    exports = pop_export_flags(overrides)
    config = _apply_overrides(demo_config(dataset, nodes), overrides)
    _run(config, exports, dashboard, dashboard_port)


_SIMULATE_EPILOG = """\b
Flags override the config file. Only the keys above have a flag of their own; every key
(lr, batch_size, hidden, round_timeout, faults, modes, policies, ...) can be set with
--set KEY=VALUE, repeated, VALUE in TOML syntax, applied after the flags:
  scatterbrained simulate --set lr=0.01 --set batch_size=16
  scatterbrained simulate --set 'faults=[{epoch=2, node=1, action="kill"}]'
--list-keys lists every key with its default and meaning.

\b
Without CONFIG_FILE, ./scatterbrained.toml is read when it exists (scatterbrained new
writes one), else the defaults are used. Your own model and data: --model mymodule:make_model
--dataset mymodule:load (see docs/your-own-model.md).
"""


@click.command(epilog=_SIMULATE_EPILOG)
@click.argument("config_file", required=False, type=click.Path(path_type=Path))
@_with_overrides
@click.option("--partition", help="iid, dirichlet:alpha=0.5 or shards:k=2.")
@click.option("--model", help="mlp, cnn, logreg, or your factory module:function.")
@click.option("--aggregator", help="fedavg, mean, median, trimmed-mean:trim=0.1, krum:f=1, ...")
@click.option(
    "--backend", type=click.Choice(["memory", "zmq", "process", "ray"]), help="How nodes run."
)
@click.option(
    "--ray-address", help="Ray cluster for --backend ray (e.g. auto); unset: a local instance."
)
@click.option("--seed", type=int, help="Seed of everything.")
@click.option("--sync/--gossip", default=None, help="Synchronous rounds or asynchronous gossip.")
@click.option("--centralized/--no-centralized", default=None, help="Train the baseline too.")
@click.option("--local-only/--no-local-only", default=None, help="Train nodes alone too.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set any config key (repeat); VALUE is TOML: --set lr=0.01.",
)
@click.option(
    "--list-keys",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_keys,
    help="List every config key with its default, and exit.",
)
@export_options
@dashboard_options
def simulate(
    config_file: Path | None,
    settings: tuple[str, ...],
    dashboard: bool,
    dashboard_port: int,
    **overrides: Any,
) -> None:
    """Run a simulated federation from CONFIG_FILE (TOML) and/or flags.

    Writes config.json, metrics.jsonl, live.jsonl, summary.json and PNG plots to the run
    folder. With --dashboard, a live page shows the run (and stays up until Ctrl-C).
    """
    path = _config_file(config_file)
    config = load_config(path) if path is not None else SimConfig()
    exports = pop_export_flags(overrides)
    config = _apply_overrides(config, overrides, parse_settings(settings))
    _run(config, exports, dashboard, dashboard_port)
