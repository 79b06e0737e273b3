"""``scatterbrained new NAME``: a project folder with a model, data and a simulation config.

The folder runs as it is: ``cd NAME && scatterbrained simulate`` reads ``scatterbrained.toml``
(see :data:`~scatterbrained.cli.simulate.DEFAULT_CONFIG`), which names ``model:make_model``
and ``data:load``. Swap either file for your own.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigurationError
from .simulate import DEFAULT_CONFIG

__all__ = ["PROJECT_FILES", "new", "write_project"]

_MODEL = '''"""The model: `make_model` returns a fresh PyTorch module.

`scatterbrained simulate` calls it once per simulated node (under the same torch seed, so
every node starts from the same weights) with the keyword arguments it declares among:

    input_shape  the shape of one sample: (64,) for the flat 8x8 digits of data.py
    input_dim    the product of input_shape: 64
    num_classes  the number of classes in the labels: 10
    hidden       the config's `hidden` (64 unless set)

It returns a torch.nn.Module that maps a batch of shape (batch, *input_shape) to logits of
shape (batch, num_classes). Images stored flat? Reshape inside the model, e.g. start a CNN
with nn.Unflatten(1, (1, 8, 8)).
"""

from __future__ import annotations

from torch import nn


def make_model(input_dim: int, num_classes: int) -> nn.Module:
    """A two-layer perceptron."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(input_dim, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )
'''

_DATA = '''"""The data: `load` returns (x_train, y_train, x_test, y_test).

Inputs have shape (n, ...) with any sample shape (they become float32); labels are integer
class ids 0..C-1 of shape (n,). NumPy arrays, torch tensors or lists all work; so does
returning (x, y) (split 80/20 by class) or torch datasets (train, test). The simulator splits
the training part among the nodes (`partition` in scatterbrained.toml) and tests every node
on the test part. In the process backend every node process calls `load`: return the same
data every time (seed any shuffle).

Here: scikit-learn's bundled 8x8 handwritten digits (no download), as flat vectors of 64
pixels scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits, 75% for training and 25% for testing (the same split every call)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test
'''

_CONFIG = """# `scatterbrained simulate`, run in this folder, reads this file.
# `scatterbrained simulate --list-keys` lists every key; `--set KEY=VALUE` overrides one
# for a run (e.g. --set epochs=20), and so do flags (e.g. --nodes 8 --backend process).

model = "model:make_model"   # make_model in model.py
dataset = "data:load"        # load in data.py
nodes = 4                    # simulated nodes n000..n003
epochs = 5                   # local epochs per node
partition = "iid"            # split of the training data: iid | dirichlet:alpha=0.5 | shards:k=2
topology = "ring"            # who shares with whom: ring | fully-connected | star | grid:cols=2
aggregator = "fedavg"        # how a node merges: fedavg | median | krum:f=1 | ...
backend = "memory"           # memory (one process) | zmq | process (one OS process per node)
batch_size = 32
lr = 0.01                    # Adam learning rate
seed = 0
centralized = false          # true: also train one model on all the data, for comparison
"""

_README = """# {name}

A scatterbrained federated-learning project: four simulated nodes train the model of
`model.py` on their share of the data of `data.py` and share parameters (never data) with
their neighbours.

```sh
pip install "scatterbrained[torch]"
scatterbrained simulate
```

Run `scatterbrained simulate` from inside this folder: it reads `scatterbrained.toml`,
prints the accuracy epoch by epoch, and writes a run folder under `runs/` (config.json,
metrics.jsonl, summary.json, accuracy.png, topology.png).

- `model.py`: `make_model(input_dim, num_classes)` returns a fresh `torch.nn.Module`; it may
  instead declare `input_shape` (the shape of one sample) or `hidden`.
- `data.py`: `load()` returns `(x_train, y_train, x_test, y_test)`.
- `scatterbrained.toml`: the experiment. Change a value for one run with
  `scatterbrained simulate --set epochs=20 --set lr=0.003`, or with flags such as
  `--nodes 8 --topology fully-connected --backend process`;
  `scatterbrained simulate --list-keys` lists every key.
"""

_GITIGNORE = "runs/\n__pycache__/\n"

#: File name -> contents of a new project (``{name}`` is the project's name).
PROJECT_FILES = {
    "model.py": _MODEL,
    "data.py": _DATA,
    DEFAULT_CONFIG: _CONFIG,
    "README.md": _README,
    ".gitignore": _GITIGNORE,
}


def write_project(folder: Path) -> list[Path]:
    """Write a new project into ``folder`` (created; it may exist only if empty).

    Returns:
        The files written.

    Raises:
        ConfigurationError: ``folder`` is a file or a folder that is not empty, or it cannot
            be created.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"{folder} is a file; choose another name for the project")
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigurationError(
            f"{folder} already exists and is not empty; nothing was written. Choose another "
            "name, or remove the folder first"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create {folder}: {exc.strerror}") from None
    name = folder.resolve().name
    written = []
    for filename, template in PROJECT_FILES.items():
        path = folder / filename
        text = template.format(name=name) if filename == "README.md" else template
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


@click.command()
@click.argument("name", type=click.Path(path_type=Path))
def new(name: Path) -> None:
    """Create the project folder NAME: model.py, data.py, scatterbrained.toml, README.md.

    It runs as it is: cd NAME && scatterbrained simulate (4 nodes learn scikit-learn's
    digits in a few seconds). Refuses to write into a folder that is not empty.
    """
    written = write_project(name)
    click.echo(f"created {name}/ with {', '.join(p.name for p in written)}")
    click.echo(f"next: cd {name} && scatterbrained simulate")
