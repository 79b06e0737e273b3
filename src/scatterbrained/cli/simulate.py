"""``scatterbrained demo`` and ``scatterbrained simulate``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from ..federation.topology import check_node_ids, topology_from_spec
from ..sim.config import SimConfig, load_config
from ..sim.datasets import default_fashion_mnist_root
from ..sim.experiment import node_id
from ..sim.runner import RunResult, run_simulation
from ._deps import require_torch
from .progress import LiveProgress, print_summary

__all__ = ["demo", "demo_config", "simulate"]

_OVERRIDES = [
    click.option("--nodes", type=int, help="Number of nodes."),
    click.option("--epochs", type=int, help="Local epochs per node."),
    click.option("--dataset", help="digits or fashion-mnist."),
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


def _apply_overrides(config: SimConfig, overrides: Mapping[str, Any]) -> SimConfig:
    """Apply command-line flags; per-node settings and faults follow a smaller network."""
    changes = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items() if v is not None
    }
    if not changes:
        return config
    data = {**config.to_json(), **changes}
    nodes, epochs = int(data["nodes"]), int(data["epochs"])
    for table in ("modes", "policies", "attacks"):
        data[table] = {k: v for k, v in data[table].items() if k.isdigit() and int(k) < nodes}
    data["faults"] = [
        {**fault, "epoch": min(int(fault["epoch"]), epochs)}
        for fault in data["faults"]
        if int(fault["node"]) < nodes
    ]
    return SimConfig.from_mapping(data)


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


def _run(config: SimConfig) -> RunResult:
    check_runnable(config)
    with LiveProgress(config) as progress:
        result = run_simulation(config, on_epoch=progress.epoch, on_status=progress.status)
    print_summary(result)
    return result


@click.command()
@_with_overrides
def demo(**overrides: Any) -> None:
    """Run the demo federation (no arguments needed).

    16 nodes on Fashion-MNIST when it is installed (else scikit-learn digits), a random
    4-regular topology, Dirichlet(0.5) label skew, node n000 starting LEECHING under a
    policy, and node n005 killed halfway and restarted two epochs later. Prints live
    progress, then a summary, the centralized baseline and the paths of the run folder and
    plots.
    """
    dataset = overrides.pop("dataset", None)
    if dataset is None and not fashion_mnist_available():
        click.echo(
            "note: Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist); "
            "using scikit-learn digits"
        )
    nodes = overrides.get("nodes") or 16
    _run(_apply_overrides(demo_config(dataset, nodes), overrides))


@click.command()
@click.argument("config_file", required=False, type=click.Path(path_type=Path))
@_with_overrides
@click.option("--partition", help="iid, dirichlet:alpha=0.5 or shards:k=2.")
@click.option("--model", help="mlp, cnn or logreg.")
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
def simulate(config_file: Path | None, **overrides: Any) -> None:
    """Run a simulated federation from CONFIG_FILE (TOML) and/or flags.

    Every key of the config file (see the README's simulation tutorial) can be given;
    flags override the file. Writes config.json, metrics.jsonl, summary.json and PNG plots
    to the run folder.
    """
    config = load_config(config_file) if config_file is not None else SimConfig()
    renamed = {k: v for k, v in overrides.items()}
    _run(_apply_overrides(config, renamed))
