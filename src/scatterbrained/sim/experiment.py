"""Everything a simulated node needs, derived deterministically from a :class:`SimConfig`.

Both the in-process runner and the per-process worker build nodes from an
:class:`Experiment`, so the two backends train the same models on the same data shards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..federation.aggregation import aggregator_from_spec
from ..federation.attacks import Attack, attack_from_spec
from ..federation.policies import policy_from_spec
from ..federation.topology import Topology, topology_from_spec
from .config import SimConfig
from .custom import (
    build_spec_model,
    import_root,
    is_spec,
    load_npz,
    load_spec_dataset,
    model_arguments,
)
from .datasets import ArrayLoader, Dataset, load_dataset
from .partition import partition

__all__ = ["NAMESPACE", "Experiment", "node_id"]

#: The namespace every simulated node joins.
NAMESPACE = "sim"


def node_id(index: int) -> str:
    """The id of simulated node ``index`` (``n000``, ``n001``, ...)."""
    return f"n{index:03d}"


@dataclass
class Experiment:
    """A loaded dataset, its split over the nodes, and the builders of models and options.

    Attributes:
        config: the configuration.
        dataset: the dataset (test set cut to ``test_limit``).
        parts: per node, the indices of its training samples.
    """

    config: SimConfig
    dataset: Dataset
    parts: list[np.ndarray]
    _topology: Topology | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, config: SimConfig) -> Experiment:
        """Load the dataset and split it.

        Raises:
            DatasetNotFoundError: the dataset's files are missing (says how to install them).
            ConfigurationError: more nodes than samples, a bad partition spec, ...
        """
        dataset = _load_data(config)
        if config.train_limit is not None and len(dataset.y_train) > config.train_limit:
            dataset = _cut(dataset, config.train_limit, None)
        if config.test_limit is not None and len(dataset.y_test) > config.test_limit:
            dataset = _cut(dataset, None, config.test_limit)
        if config.nodes > len(dataset.y_train):
            raise ConfigurationError(
                f"{config.nodes} nodes but {dataset.name} has only {len(dataset.y_train)} "
                f"training samples; use at most {len(dataset.y_train)} nodes"
            )
        parts = partition(config.partition, dataset.y_train, config.nodes, config.seed)
        exp = cls(config, dataset, parts)
        exp.model_kwargs()  # e.g. a cnn on flat inputs fails here, before any node starts
        return exp

    @property
    def ids(self) -> list[str]:
        """All node ids."""
        return [node_id(i) for i in range(self.config.nodes)]

    def attack_of(self, index: int) -> Attack | None:
        """Node ``index``'s attack model (a fresh one), or ``None`` for an honest node."""
        spec = self.config.attacks.get(str(index))
        return attack_from_spec(spec) if spec is not None else None

    def train_loader(self, index: int) -> ArrayLoader:
        """Node ``index``'s training batches (shuffled, seeded per node; a ``label-flip``
        attacker's labels are ``C - 1 - y``)."""
        idx = self.parts[index]
        labels = self.dataset.y_train[idx]
        attack = self.attack_of(index)
        if attack is not None and attack.flips_labels:
            labels = self.dataset.num_classes - 1 - labels
        return ArrayLoader(
            self.dataset.x_train[idx],
            labels,
            batch_size=self.config.batch_size,
            shuffle=True,
            seed=self.config.seed * 1_000_003 + index,
        )

    def test_loader(self) -> ArrayLoader:
        """The shared test set, in order."""
        return ArrayLoader(self.dataset.x_test, self.dataset.y_test, batch_size=512, shuffle=False)

    def import_roots(self) -> list[str]:
        """Folders another process needs on ``sys.path`` for the config's ``module:function``
        model and dataset (the ``process`` backend hands them to its workers)."""
        specs = [v for v in (self.config.model, self.config.dataset) if is_spec(v)]
        roots = [import_root(str(spec)) for spec in specs]
        return sorted({root for root in roots if root is not None})

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the model factory for this dataset (for a ``module:function``
        factory: everything offered, see :data:`~scatterbrained.sim.custom.MODEL_ARGUMENTS`)."""
        shape = self.dataset.input_shape
        classes = self.dataset.num_classes
        if is_spec(self.config.model):
            return model_arguments(shape, classes, self.config.hidden)
        name = self.config.model.lower()
        if name == "mlp":
            return {
                "input_dim": math.prod(shape),
                "num_classes": classes,
                "hidden": self.config.hidden,
            }
        if name == "logreg":
            return {"input_dim": math.prod(shape), "num_classes": classes}
        if name == "cnn":
            if len(shape) != 3:
                raise ConfigurationError(
                    f"model cnn needs image inputs (channels, height, width); {self.dataset.name} "
                    f'has shape {shape}; use model = "mlp"'
                )
            return {"num_classes": classes, "channels": shape[0], "image_size": shape[-1]}
        raise ConfigurationError(f"unknown model {self.config.model!r}; use mlp, cnn or logreg")

    def build_model(self) -> Any:
        """A fresh model; every node starts from the same seeded initial weights."""
        if is_spec(self.config.model):
            return build_spec_model(self.config.model, self.model_kwargs(), self.config.seed)
        from .models import build_model

        return build_model(self.config.model, seed=self.config.seed, **self.model_kwargs())

    def create_optimizer(self) -> Callable[[Any], Any]:
        """The optimizer factory: ``model -> Adam(model.parameters(), lr=config.lr)``."""
        lr = self.config.lr

        def adam(model: Any) -> Any:
            import torch

            return torch.optim.Adam(model.parameters(), lr=lr)

        return adam

    def topology(self) -> Topology:
        """The configured topology rule, one object shared by every node of the experiment.

        Rules depend only on the membership and the epoch and cache their graph, so sharing
        one object saves drawing the same graph once per node.
        """
        if self._topology is None:
            self._topology = topology_from_spec(self.config.topology)
        return self._topology

    def namespace_options(self, index: int) -> dict[str, Any]:
        """Keyword arguments of ``node.namespace`` for node ``index``."""
        key = str(index)
        options: dict[str, Any] = {
            "topology": self.topology(),
            "mode": self.config.modes.get(key, self.config.mode),
            "aggregator": aggregator_from_spec(self.config.aggregator),
            "sync": self.config.sync,
            "round_timeout": self.config.round_timeout,
            "share_every": self.config.share_every,
            "gossip_wait": self.config.gossip_wait,
        }
        if key in self.config.policies:
            options["policy"] = policy_from_spec(self.config.policies[key])
        return options

    def mode_of(self, index: int) -> str:
        """Node ``index``'s initial mode name."""
        return self.config.modes.get(str(index), self.config.mode)

    def centralized_accuracy(self) -> float:
        """Train one model on all the training data for ``epochs`` epochs; test accuracy."""
        return _train_alone(self, np.arange(len(self.dataset.y_train)), seed_offset=0)

    def local_only_accuracies(self) -> list[float]:
        """Each node's test accuracy when trained alone on its shard."""
        return [_train_alone(self, part, seed_offset=i + 1) for i, part in enumerate(self.parts)]


def _load_data(config: SimConfig) -> Dataset:
    """The config's dataset: in memory, a ``module:function`` loader, an ``.npz`` file or a
    registered name."""
    source = config.dataset
    if isinstance(source, Dataset):
        return source
    if is_spec(source):
        return load_spec_dataset(source, seed=config.seed)
    if source.strip().lower().endswith(".npz"):
        return load_npz(source)
    kwargs: dict[str, Any] = {}
    if source.replace("_", "-").lower() == "fashion-mnist":
        kwargs = {"train_limit": config.train_limit, "test_limit": config.test_limit}
    return load_dataset(source, **kwargs)


def _train_alone(exp: Experiment, indices: np.ndarray, seed_offset: int) -> float:
    from ..adapters import adapt

    model = exp.build_model()
    adapter = adapt(model, exp.create_optimizer(), None)
    loader = ArrayLoader(
        exp.dataset.x_train[indices],
        exp.dataset.y_train[indices],
        batch_size=exp.config.batch_size,
        shuffle=True,
        seed=exp.config.seed * 1_000_003 + seed_offset,
    )
    for _ in range(exp.config.epochs):
        adapter.train_epoch(loader)
    accuracy = adapter.evaluate(exp.test_loader()).accuracy
    return float(accuracy or 0.0)


def _cut(dataset: Dataset, train: int | None, test: int | None) -> Dataset:
    if train is not None:
        dataset = dataclasses.replace(
            dataset, x_train=dataset.x_train[:train], y_train=dataset.y_train[:train]
        )
    if test is not None:
        dataset = dataclasses.replace(
            dataset, x_test=dataset.x_test[:test], y_test=dataset.y_test[:test]
        )
    return dataset
