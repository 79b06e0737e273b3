"""Tests of scatterbrained.sim.models: factories, registry, seeding, size limits, speed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.models import MAX_DIM, MODEL_FACTORIES, build_model, cnn, logreg, mlp

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.timeout(60)


def _state(model: Any) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def test_importing_models_does_not_import_torch() -> None:
    # Execute: a fresh interpreter, so torch imported by this test module does not count
    code = "import sys, scatterbrained.sim.models; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True
    )
    # Assert
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("model", "batch", "outputs"),
    [
        (lambda: mlp(64, 10), torch.zeros(5, 64), 10),
        (lambda: mlp(784, 3, hidden=8), torch.zeros(5, 1, 28, 28), 3),
        (lambda: logreg(64, 10), torch.zeros(5, 1, 8, 8), 10),
        (lambda: cnn(), torch.zeros(5, 1, 28, 28), 10),
        (lambda: cnn(num_classes=4, channels=3, image_size=32), torch.zeros(5, 3, 32, 32), 4),
        (lambda: cnn(image_size=8), torch.zeros(5, 1, 8, 8), 10),
    ],
)
def test_factories_produce_logits_of_the_right_shape(
    model: Callable[[], Any], batch: Any, outputs: int
) -> None:
    # Execute
    logits = model()(batch)
    # Assert
    assert tuple(logits.shape) == (5, outputs)


def test_mlp_layout_and_parameter_count() -> None:
    # Execute
    model = mlp(input_dim=64, num_classes=10, hidden=32)
    # Assert
    kinds = [type(layer).__name__ for layer in model.children()]
    assert kinds == ["Flatten", "Linear", "ReLU", "Linear"]
    assert sum(p.numel() for p in model.parameters()) == 64 * 32 + 32 + 32 * 10 + 10


def test_build_model_with_seed_is_reproducible_and_leaves_global_rng_alone() -> None:
    # Prepare
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    # Execute
    first = build_model("mlp", seed=7, input_dim=16, num_classes=4)
    second = build_model("MLP", seed=7, input_dim=16, num_classes=4)
    other = build_model("mlp", seed=8, input_dim=16, num_classes=4)
    after = torch.rand(3)
    # Assert
    for name, value in _state(first).items():
        np.testing.assert_array_equal(value, _state(second)[name])
    assert not np.array_equal(_state(first)["1.weight"], _state(other)["1.weight"])
    assert torch.equal(after, expected_next), "build_model(seed=...) disturbed the global RNG"


def test_build_model_without_seed_uses_global_rng() -> None:
    torch.manual_seed(5)
    first = build_model("logreg", input_dim=4, num_classes=2)
    torch.manual_seed(5)
    second = build_model("logreg", input_dim=4, num_classes=2)
    np.testing.assert_array_equal(_state(first)["1.weight"], _state(second)["1.weight"])


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown model 'cnnn'.*did you mean 'cnn'"):
        build_model("cnnn")
    with pytest.raises(ConfigurationError, match="expected one of mlp, cnn, logreg"):
        build_model("resnet")


def test_bad_kwargs_list_the_accepted_ones() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"rejects arguments .*'width'.*takes \(input_dim, num_classes, hidden=64\)",
    ):
        build_model("mlp", input_dim=4, num_classes=2, width=3)
    with pytest.raises(ConfigurationError, match="rejects arguments"):
        build_model("logreg", input_dim=4)  # num_classes missing
    with pytest.raises(ConfigurationError, match="seed must be an integer"):
        build_model("cnn", seed="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("mlp", {"input_dim": 0, "num_classes": 2}, "input_dim must be an integer"),
        ("mlp", {"input_dim": 4, "num_classes": True}, "num_classes must be an integer"),
        ("mlp", {"input_dim": 4.0, "num_classes": 2}, "input_dim must be an integer"),
        ("cnn", {"image_size": MAX_DIM + 1}, "image_size must be an integer"),
        ("mlp", {"input_dim": 100_000, "num_classes": 2, "hidden": 100_000}, "parameters"),
        ("logreg", {"input_dim": MAX_DIM, "num_classes": 1000}, "more than the"),
        ("cnn", {"image_size": 8192}, "use smaller sizes"),
    ],
)
def test_sizes_from_untrusted_kwargs_are_bounded(
    name: str, kwargs: dict[str, Any], message: str
) -> None:
    # Execute / Assert: rejected before any allocation (a huge model would take seconds)
    started = time.perf_counter()
    with pytest.raises(ConfigurationError, match=message):
        build_model(name, **kwargs)
    assert time.perf_counter() - started < 1.0


def test_registry_is_immutable_and_complete() -> None:
    assert set(MODEL_FACTORIES) == {"mlp", "cnn", "logreg"}
    with pytest.raises(TypeError):
        MODEL_FACTORIES["evil"] = mlp  # type: ignore[index]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread (as a many-node simulation should), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("one_torch_thread")
def test_cnn_epoch_of_a_node_share_is_fast() -> None:
    # Prepare: 3,750 samples (1/16 of Fashion-MNIST's 60k), batch 32, as one simulated node
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3750, 1, 28, 28), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, size=3750))
    model = build_model("cnn", seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    # Execute: CPU time of this process, so other work on a shared machine does not count
    started = time.process_time()
    for start in range(0, len(x), 32):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(x[start : start + 32]), y[start : start + 32]
        )
        loss.backward()
        optimizer.step()
    cpu_seconds = time.process_time() - started
    # Assert: about 0.5 s of CPU measured on this machine; the bound leaves room for slower CPUs
    assert cpu_seconds < 2.5, f"one epoch took {cpu_seconds:.2f} s of CPU"
