"""Your own model and data in the simulator: module:function specs, .npz files, in-memory data."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.config import SimConfig, load_config
from scatterbrained.sim.custom import (
    as_dataset,
    build_spec_model,
    describe,
    load_npz,
    model_arguments,
    save_npz,
)
from scatterbrained.sim.datasets import Dataset, from_arrays, load_digits
from scatterbrained.sim.experiment import Experiment
from scatterbrained.sim.runner import run_simulation

pytestmark = pytest.mark.timeout(120)

MODULE = """
import numpy as np
from sklearn.datasets import load_digits
from torch import nn

def make_model(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 32), nn.ReLU(),
                         nn.Linear(32, num_classes))

def needs_width(width, num_classes):
    return nn.Linear(64, num_classes)

def not_a_model(num_classes):
    return "a string"

def load():
    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target

def load_nothing():
    return None

def load_broken():
    raise ValueError("disk on fire")

def model_broken(num_classes):
    raise RuntimeError("bad layer size")

def load_mismatched():
    return np.zeros((2000, 64), dtype="float32"), np.zeros(1999, dtype="int64")
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A uniquely named module of factories in a folder on sys.path (like a user's file)."""
    name = f"user_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture(scope="module")
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target


# ---------------------------------------------------------------------------- messages


def test_describe_names_arrays_by_shape_and_cuts_long_values() -> None:
    array = np.zeros((1797, 64), dtype=np.float32)

    assert describe(array) == "<ndarray shape=(1797, 64) float32>"
    assert describe((array, array[:, 0])) == (
        "(<ndarray shape=(1797, 64) float32>, <ndarray shape=(1797,) float32>)"
    )
    assert len(describe("x" * 10_000)) < 80
    assert len(describe(list(range(10_000)))) < 80


def test_arrays_given_as_a_dataset_give_a_short_error(
    digits_arrays: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = digits_arrays

    with pytest.raises(ConfigurationError) as caught:
        SimConfig(dataset=x)  # type: ignore[arg-type]

    message = str(caught.value)
    assert "<ndarray shape=(1797, 64) float32>" in message
    assert "(x, y)" in message and len(message.splitlines()) == 1 and len(message) < 300


def test_a_wrongly_typed_array_value_is_described_not_dumped(
    digits_arrays: tuple[np.ndarray, np.ndarray],
) -> None:
    with pytest.raises(ConfigurationError, match=r"lr = <ndarray shape=\(1797, 64\)") as caught:
        SimConfig.from_mapping({"lr": digits_arrays[0]})

    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"model": "resnet"}, "module:function"),
        ({"model": "my model:make"}, "module:function"),
        ({"dataset": "data:"}, "is not module:function"),
    ],
)
def test_malformed_names_are_refused_with_the_way_to_write_them(
    changes: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        SimConfig.from_mapping(changes)


# ---------------------------------------------------------------------------- in-memory data


def test_in_memory_data_in_every_form(digits_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits_arrays

    from_pair = SimConfig(dataset=(x, y))  # type: ignore[arg-type]
    from_four = SimConfig(dataset=(x[:1500], y[:1500], x[1500:], y[1500:]))  # type: ignore[arg-type]
    given = SimConfig(dataset=from_arrays(x, y, name="mine"))

    assert isinstance(from_pair.dataset, Dataset) and from_pair.dataset.input_shape == (64,)
    assert len(from_pair.dataset.y_train) + len(from_pair.dataset.y_test) == 1797
    assert isinstance(from_four.dataset, Dataset) and len(from_four.dataset.y_test) == 297
    assert given.replace(nodes=3).dataset is given.dataset  # replace keeps the data
    assert given.to_json()["dataset"] == "<in-memory dataset 'mine'>"
    assert "ndarray" not in repr(given) and "Dataset 'mine'" in repr(given)


def test_torch_datasets_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import TensorDataset

    x = torch.rand(40, 1, 4, 4)
    y = torch.arange(40) % 4
    train, test = TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])

    dataset = as_dataset((train, test))

    assert dataset.input_shape == (1, 4, 4) and dataset.num_classes == 4
    assert (len(dataset.y_train), len(dataset.y_test)) == (30, 10)


def test_npz_round_trip_and_missing_arrays(tmp_path: Path) -> None:
    digits = load_digits()
    path = save_npz(digits, tmp_path / "digits.npz")
    np.savez(tmp_path / "partial.npz", x_train=digits.x_train)

    loaded = load_npz(path)

    assert loaded.name == "digits" and loaded.num_classes == 10
    assert np.array_equal(loaded.x_test, digits.x_test)
    assert np.array_equal(loaded.y_train, digits.y_train)
    with pytest.raises(ConfigurationError, match="lacks y_train, x_test, y_test"):
        load_npz(tmp_path / "partial.npz")


# ---------------------------------------------------------------------------- module:function


def test_a_model_factory_gets_the_arguments_it_declares(
    user_module: str, torch_ready: None
) -> None:
    offered = model_arguments((64,), 10, hidden=16)

    model = build_spec_model(f"{user_module}:make_model", offered, seed=0)
    again = build_spec_model(f"{user_module}:make_model", offered, seed=0)

    first, second = model.state_dict(), again.state_dict()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)  # seeded
    with pytest.raises(ConfigurationError, match="needs argument 'width'"):
        build_spec_model(f"{user_module}:needs_width", offered)
    with pytest.raises(
        ConfigurationError, match=r"returned 'a string'; return a torch\.nn\.Module"
    ):
        build_spec_model(f"{user_module}:not_a_model", offered)


def test_unimportable_and_missing_functions_name_the_spec(user_module: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_module_x'"):
        Experiment.load(SimConfig(dataset="no_such_module_x:load"))
    with pytest.raises(ConfigurationError, match="has no attribute 'absent'"):
        Experiment.load(SimConfig(dataset=f"{user_module}:absent"))
    with pytest.raises(ConfigurationError, match=r"load_nothing\(\) = None: expected a Dataset"):
        Experiment.load(SimConfig(dataset=f"{user_module}:load_nothing"))


def test_a_loader_or_factory_that_raises_gives_one_line_naming_it_and_its_line(
    user_module: str,
) -> None:
    with pytest.raises(ConfigurationError) as loading:
        Experiment.load(SimConfig(dataset=f"{user_module}:load_broken"))
    with pytest.raises(ConfigurationError) as building:
        build_spec_model(f"{user_module}:model_broken", model_arguments((64,), 10, 16))

    message = str(loading.value)
    assert message.startswith(f"dataset = '{user_module}:load_broken' raised ValueError: disk")
    assert f"{user_module}.py:" in message and "\n" not in message
    assert loading.value.__cause__ is None and loading.value.__suppress_context__
    assert "raised RuntimeError: bad layer size" in str(building.value)


def test_data_of_mismatched_lengths_names_the_loader_and_the_shapes(user_module: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Experiment.load(SimConfig(dataset=f"{user_module}:load_mismatched"))

    message = str(caught.value)
    assert message.startswith(f"dataset = '{user_module}:load_mismatched' returned data")
    assert "(2000, 64) and (1999,)" in message and len(message) < 300


def test_own_model_and_data_by_name_learn_in_memory(
    user_module: str, tmp_path: Path, torch_ready: None
) -> None:
    config = SimConfig(
        nodes=2,
        epochs=3,
        model=f"{user_module}:make_model",
        dataset=f"{user_module}:load",
        partition="iid",
        lr=0.01,
        out=str(tmp_path / "run"),
    )

    result = run_simulation(config)

    assert result.summary["mean_accuracy"] > 0.5  # chance: 0.1
    written = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert (written["model"], written["dataset"]) == (config.model, config.dataset)


def test_in_memory_data_is_saved_beside_the_run_and_config_json_points_to_it(
    digits_arrays: tuple[np.ndarray, np.ndarray], tmp_path: Path, torch_ready: None
) -> None:
    x, y = digits_arrays
    config = SimConfig(
        nodes=2, epochs=2, dataset=from_arrays(x, y), partition="iid", lr=0.01, out=str(tmp_path)
    )

    result = run_simulation(config)

    saved = load_config(tmp_path / "config.json")
    assert saved.dataset == str((tmp_path / "dataset.npz").resolve())
    assert np.array_equal(Experiment.load(saved).dataset.x_train, config.dataset.x_train)  # type: ignore[union-attr]
    assert result.summary["mean_accuracy"] > 0.5
