"""Tests of the "torch.export" architecture: export, rebuild, train, and hostile payloads."""

from __future__ import annotations

import copy
import io
import json
import pathlib
import pickle
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import Tensor, nn  # noqa: E402

from scatterbrained.adapters import adapter_from_architecture  # noqa: E402
from scatterbrained.adapters.torch import TorchAdapter  # noqa: E402
from scatterbrained.adapters.torch_export import (  # noqa: E402
    MAGIC,
    ExportedModule,
    export_program,
    load_program,
)
from scatterbrained.errors import ModelSyncError  # noqa: E402
from scatterbrained.wire.messages import Architecture  # noqa: E402

torch.set_num_threads(1)


class _Net(nn.Module):
    """Nested modules, batch norm, dropout and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(32, 10)
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x: Tensor) -> Any:
        return self.head(self.body(x)) * self.scale


class _Tied(nn.Module):
    """Integer inputs and an output layer tied to the embedding (1 MB of weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, 256)
        self.out = nn.Linear(256, 1000, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: Tensor) -> Any:
        return self.out(self.embed(tokens))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Any:
        if x.sum() > 0:  # data-dependent control flow: not exportable
            return self.fc(x)
        return -self.fc(x)


def _batch(rows: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((rows, 64)).astype(np.float32), rng.integers(0, 10, rows)


@pytest.fixture(scope="module")
def trained() -> tuple[TorchAdapter, Architecture]:
    torch.manual_seed(0)
    adapter = TorchAdapter(_Net(), lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    adapter.train_epoch([_batch()])
    architecture = adapter.export_architecture()
    assert architecture is not None
    return adapter, architecture


def _envelope(architecture: Architecture) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(architecture.payload[len(MAGIC) :])
    return decoded


def _payload(envelope: dict[str, Any]) -> bytes:
    return MAGIC + json.dumps(envelope).encode()


@pytest.mark.timeout(60)
def test_export_format_is_json_graphs_without_weights(trained: Any) -> None:
    # Prepare
    adapter, architecture = trained
    # Execute
    envelope = _envelope(architecture)
    # Assert
    assert architecture.format == "torch.export"
    assert set(envelope["programs"]) == {"train", "eval"}  # batch norm/dropout differ by mode
    assert envelope["state_keys"] == list(adapter.model.state_dict())
    assert set(envelope["constants"]) == {"scale"}
    assert not zipfile.is_zipfile(io.BytesIO(architecture.payload))
    assert adapter.export_architecture() is architecture  # cached


@pytest.mark.timeout(60)
def test_rebuilt_model_matches_original_in_both_modes(trained: Any) -> None:
    # Prepare
    adapter, architecture = trained
    original = copy.deepcopy(adapter.model)
    inputs = torch.rand(7, 64)
    # Execute
    rebuilt = adapter_from_architecture(architecture, adapter.get_arrays())
    model = rebuilt.model
    # Assert
    assert isinstance(model, ExportedModule)
    assert list(model.state_dict()) == list(original.state_dict())
    assert all(np.array_equal(v, adapter.get_arrays()[k]) for k, v in rebuilt.get_arrays().items())
    original.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(original(inputs), model(inputs))
        assert model(torch.rand(1, 64)).shape == (1, 10)  # any batch size
    original.train()
    model.train()
    torch.manual_seed(5)
    expected = original(inputs)
    torch.manual_seed(5)
    assert torch.allclose(expected, model(inputs))


@pytest.mark.timeout(60)
def test_rebuilt_model_trains_like_the_original(trained: Any) -> None:
    # Prepare
    adapter, architecture = trained
    twin = TorchAdapter(
        copy.deepcopy(adapter.model), lambda m: torch.optim.SGD(m.parameters(), lr=0.1)
    )
    rebuilt = adapter_from_architecture(
        architecture,
        adapter.get_arrays(),
        create_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
    )
    batches = [_batch(seed=s) for s in range(3)]
    # Execute
    torch.manual_seed(9)
    twin.train_epoch(batches)
    torch.manual_seed(9)
    result = rebuilt.train_epoch(batches)
    # Assert
    assert all(p.requires_grad for p in rebuilt.model.parameters())
    assert result.steps == 3
    for name, value in twin.get_arrays().items():
        assert np.allclose(rebuilt.get_arrays()[name], value, atol=1e-5), name
    before = int(adapter.get_arrays()["body.1.num_batches_tracked"])
    assert int(rebuilt.get_arrays()["body.1.num_batches_tracked"]) == before + 3


@pytest.mark.timeout(60)
def test_rebuilt_model_survives_deepcopy_and_serves_same_payload(trained: Any) -> None:
    # Prepare
    adapter, architecture = trained
    model = load_program(architecture.payload, adapter.get_arrays()).eval()
    inputs = torch.rand(3, 64)
    # Execute
    clone = copy.deepcopy(model).to("cpu")
    with torch.no_grad():
        clone.get_parameter("head.weight").add_(1.0)
        changed, kept = clone(inputs), model(inputs)
    # Assert
    assert not torch.allclose(changed, kept)
    assert torch.equal(model(inputs), kept)
    assert TorchAdapter(model).export_architecture() == architecture


@pytest.mark.timeout(60)
def test_tied_weights_integer_inputs_and_weights_stay_out_of_payload() -> None:
    # Prepare
    torch.manual_seed(0)
    original = _Tied()
    tokens = torch.tensor([[1, 5, 7], [2, 3, 999]])
    # Execute
    payload = export_program(copy.deepcopy(original), tokens)
    arrays = TorchAdapter(original).get_arrays()
    rebuilt = load_program(payload, arrays)
    # Assert
    assert len(payload) < 100_000 < arrays["embed.weight"].nbytes
    assert list(rebuilt.state_dict()) == ["embed.weight", "out.weight"]
    assert rebuilt.get_parameter("embed.weight") is rebuilt.get_parameter("out.weight")
    with torch.no_grad():
        assert torch.equal(original(tokens), rebuilt(tokens))
    trainer = TorchAdapter(rebuilt, loss=lambda output, _target: output.square().mean())
    trainer.train_epoch([(tokens.numpy(), np.zeros(2))])
    after = trainer.get_arrays()
    assert np.array_equal(after["embed.weight"], after["out.weight"])
    assert not np.array_equal(after["embed.weight"], arrays["embed.weight"])


@pytest.mark.timeout(60)
def test_unexportable_model_or_unknown_example_gives_no_architecture(monkeypatch: Any) -> None:
    # Prepare
    from scatterbrained.adapters import torch_export

    attempts: list[int] = []

    def counting_export(model: nn.Module, example: Tensor) -> bytes:
        attempts.append(1)
        return export_program(model, example)

    monkeypatch.setattr(torch_export, "export_program", counting_export)
    fresh = TorchAdapter(_Branchy())
    branchy = TorchAdapter(_Branchy())
    branchy.train_epoch([(np.ones((2, 4)), np.ones((2, 2)))])
    # Execute / Assert
    assert fresh.export_architecture() is None
    assert branchy.export_architecture() is None
    assert branchy.export_architecture() is None
    assert attempts == [1]  # a failed export is not retried on every request


class _Printing(nn.Module):
    def forward(self, x: Tensor) -> Any:
        torch.ops.aten._print.default("exporting")  # an op that peers refuse
        return x * 2


@pytest.mark.timeout(60)
def test_graphs_that_peers_would_refuse_are_not_exported() -> None:
    # Prepare
    adapter = TorchAdapter(_Printing())
    adapter.evaluate([(np.zeros((2, 3)), np.zeros((2, 3)))])
    # Execute / Assert
    assert adapter.export_architecture() is None


@pytest.mark.timeout(60)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_export_and_rebuild() -> None:
    # Prepare
    torch.manual_seed(0)
    adapter = TorchAdapter(_Net(), device="cuda")
    adapter.train_epoch([_batch()])
    architecture = adapter.export_architecture()
    assert architecture is not None
    # Execute
    rebuilt = adapter_from_architecture(architecture, adapter.get_arrays(), device="cuda")
    result = rebuilt.train_epoch([_batch(seed=1)])
    # Assert
    assert all(p.device.type == "cuda" for p in rebuilt.model.parameters())
    assert result.steps == 1 and np.isfinite(result.loss)
    rebuilt.model.eval()
    adapter.model.eval()
    probe = torch.rand(3, 64, device="cuda")
    rebuilt.set_arrays(adapter.get_arrays())
    with torch.no_grad():
        assert torch.allclose(rebuilt.model(probe), adapter.model(probe))


@pytest.mark.timeout(60)
def test_load_never_calls_torch_load_or_pickle(trained: Any, monkeypatch: Any) -> None:
    # Prepare
    adapter, architecture = trained

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("deserialization must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    # Execute
    model = load_program(architecture.payload, adapter.get_arrays())
    # Assert
    assert isinstance(model, ExportedModule)


class _Evil:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def _zip_with_pickle(marker: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": _Evil(marker)}, buffer)
    return buffer.getvalue()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "make",
    [
        lambda marker: b"\x00garbage\xff" * 10,
        lambda marker: pickle.dumps(_Evil(marker)),
        _zip_with_pickle,
        lambda marker: MAGIC + pickle.dumps(_Evil(marker)),
        lambda marker: MAGIC + b"[1, 2, 3]",
        lambda marker: MAGIC + b"{" * 100_000,
        lambda marker: b"",
    ],
    ids=["garbage", "pickle", "zip-pickle", "magic-pickle", "json-list", "deep", "empty"],
)
def test_hostile_payloads_raise_and_run_nothing(
    trained: Any, tmp_path: pathlib.Path, make: Callable[[pathlib.Path], bytes]
) -> None:
    # Prepare
    adapter, _ = trained
    marker = tmp_path / "pwned"
    architecture = Architecture(format="torch.export", payload=make(marker))
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        adapter_from_architecture(architecture, adapter.get_arrays())
    assert not marker.exists()


def _first_node(envelope: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = envelope["programs"]["train"]["graph_module"]["graph"]["nodes"][0]
    return node


def _set_target(target: str) -> Callable[[dict[str, Any], pathlib.Path], None]:
    def mutate(envelope: dict[str, Any], marker: pathlib.Path) -> None:
        _first_node(envelope)["target"] = target

    return mutate


def _evil_expression(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    values = envelope["programs"]["train"]["graph_module"]["graph"]["tensor_values"]
    size = values["x"]["sizes"][0]
    size["as_expr"]["expr_str"] = f"__import__('pathlib').Path('{marker}').touch()"


def _evil_enum(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    entry = envelope["programs"]["train"]["graph_module"]["module_call_graph"][0]
    context = json.dumps({"__enum__": True, "fqn": "antigravity:x", "name": "y"})
    spec = [1, {"type": "builtins.dict", "context": context, "children_spec": []}]
    entry["signature"]["in_spec"] = json.dumps(spec)


def _evil_name(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    spec = envelope["programs"]["train"]["graph_module"]["signature"]["input_specs"][0]
    spec["parameter"]["parameter_name"] = 'body.0").__class__("'


def _reserved_name(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    spec = envelope["programs"]["train"]["graph_module"]["signature"]["input_specs"][0]
    spec["parameter"]["parameter_name"] = "forward"


def _newline_string(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    _first_node(envelope)["outputs"][0]["as_tensor"]["name"] = "linear\nimport os"


def _huge_constant(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    envelope["constants"]["scale"]["shape"] = [2**30, 2**30]


def _missing_eval(envelope: dict[str, Any], marker: pathlib.Path) -> None:
    envelope["programs"]["other"] = envelope["programs"].pop("eval")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "mutate",
    [
        _set_target("torch.load"),
        _set_target("builtins.exec"),
        _set_target("torch.ops.aten.from_file.default"),
        _set_target("torch.ops.higher_order.cond"),
        _set_target("#custom.op"),
        _evil_expression,
        _evil_enum,
        _evil_name,
        _reserved_name,
        _newline_string,
        _huge_constant,
        _missing_eval,
    ],
)
def test_tampered_programs_are_rejected_before_torch_sees_them(
    trained: Any, tmp_path: pathlib.Path, mutate: Callable[[dict[str, Any], pathlib.Path], None]
) -> None:
    # Prepare
    adapter, architecture = trained
    marker = tmp_path / "pwned"
    envelope = _envelope(architecture)
    mutate(envelope, marker)
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        load_program(_payload(envelope), adapter.get_arrays())
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_guard_code_and_metadata_are_stripped_not_run(trained: Any, tmp_path: pathlib.Path) -> None:
    # Prepare
    adapter, architecture = trained
    marker = tmp_path / "pwned"
    envelope = _envelope(architecture)
    for program in envelope["programs"].values():
        program["guards_code"] = [f"__import__('pathlib').Path('{marker}').touch() or True"]
        program["graph_module"]["metadata"] = {"custom": "{}"}
    _first_node(envelope)["metadata"] = {"stack_trace": "x\nimport os"}
    # Execute
    model = load_program(_payload(envelope), adapter.get_arrays())
    model(torch.rand(2, 64))
    # Assert
    assert not marker.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a.pop("head.bias"),
        lambda a: a.update({"head.bias": np.zeros(3, np.float32)}),
        lambda a: a.update({"head.bias": np.zeros(10, np.float64)}),
        lambda a: a.update({"extra": np.zeros(1, np.float32)}),
    ],
    ids=["missing", "shape", "dtype", "extra"],
)
def test_weights_that_do_not_fit_the_graph_are_rejected(trained: Any, mutate: Any) -> None:
    # Prepare
    adapter, architecture = trained
    arrays = adapter.get_arrays()
    mutate(arrays)
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        load_program(architecture.payload, arrays)
