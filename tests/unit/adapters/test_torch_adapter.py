"""Tests of TorchAdapter: training on real digits, loss inference, casting, arrays in place."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import Tensor, nn  # noqa: E402

from scatterbrained.adapters import ModelAdapter  # noqa: E402
from scatterbrained.adapters.torch import TorchAdapter  # noqa: E402
from scatterbrained.errors import ConfigurationError  # noqa: E402

torch.set_num_threads(1)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order] / 16.0, y[order]


def _batches(x: np.ndarray, y: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.timeout(60)
def test_mlp_learns_digits_above_85_percent() -> None:
    # Prepare
    x, y = _digits()
    train, valid = _batches(x[:1400], y[:1400], 32), _batches(x[1400:], y[1400:], 256)
    adapter = TorchAdapter(_mlp())
    # Execute
    results = [adapter.train_epoch(train) for _ in range(5)]
    evaluation = adapter.evaluate(valid)
    # Assert
    assert isinstance(adapter, ModelAdapter)
    assert results[-1].loss < results[0].loss
    assert results[0].samples == 1400 and results[0].steps == math.ceil(1400 / 32)
    assert evaluation.samples == len(x) - 1400
    assert evaluation.accuracy is not None and evaluation.accuracy > 0.85


@pytest.mark.timeout(30)
def test_integer_targets_infer_cross_entropy() -> None:
    # Prepare
    model = _mlp()
    adapter = TorchAdapter(model)
    inputs = np.random.default_rng(1).random((8, 64)).astype(np.float32)
    labels = np.arange(8) % 10
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs))
    expected = float(nn.functional.cross_entropy(logits, torch.tensor(labels)))
    # Execute
    result = adapter.evaluate([(inputs, labels)])
    # Assert
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.accuracy is not None


@pytest.mark.timeout(30)
def test_float_targets_infer_mse_and_learn_a_regression() -> None:
    # Prepare
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(256, 3))
    targets = inputs @ np.array([1.5, -2.0, 0.5]) + 0.3  # shape (256,), model gives (256, 1)
    adapter = TorchAdapter(nn.Linear(3, 1), lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    batches = _batches(inputs, targets, 32)
    # Execute
    first = adapter.train_epoch(batches)
    for _ in range(20):
        adapter.train_epoch(batches)
    result = adapter.evaluate(batches)
    # Assert
    assert result.accuracy is None
    assert result.loss < 1e-3 < first.loss


@pytest.mark.timeout(30)
def test_float64_numpy_inputs_feed_a_float32_model() -> None:
    # Prepare
    adapter = TorchAdapter(_mlp())
    inputs = np.random.default_rng(3).random((4, 64))  # float64
    labels = np.array([1, 2, 3, 4], dtype=np.int32)
    # Execute
    result = adapter.train_epoch([(inputs, labels)])
    # Assert
    assert result.samples == 4 and np.isfinite(result.loss)
    assert adapter.example_input is not None
    assert adapter.example_input.dtype == torch.float32
    assert tuple(adapter.example_input.shape) == (2, 64)
    assert not adapter.example_input.any()  # zeros: no training data is kept


@pytest.mark.timeout(30)
def test_float64_model_keeps_float64() -> None:
    # Prepare
    model = nn.Linear(2, 1).double()
    adapter = TorchAdapter(model)
    # Execute
    adapter.train_epoch([(np.ones((3, 2), dtype=np.float32), np.ones(3, dtype=np.float32))])
    # Assert
    assert adapter.get_arrays()["weight"].dtype == np.float64


@pytest.mark.timeout(30)
def test_get_set_round_trip_is_in_place_and_keeps_optimizer_bound() -> None:
    # Prepare
    model = _mlp()
    adapter = TorchAdapter(model)
    adapter.train_epoch([(np.zeros((4, 64)), np.zeros(4, dtype=np.int64))])
    params_before = [id(p) for p in model.parameters()]
    optimizer_params = [id(p) for group in adapter.optimizer.param_groups for p in group["params"]]
    arrays = adapter.get_arrays()
    new = {name: np.full_like(value, 0.25) for name, value in arrays.items()}
    # Execute
    adapter.set_arrays(new)
    new["0.weight"][:] = 9.0  # the adapter must hold its own copy
    # Assert
    assert [id(p) for p in model.parameters()] == params_before == optimizer_params
    assert torch.all(model[0].weight == 0.25)
    assert all(np.all(v == 0.25) for v in adapter.get_arrays().values())


@pytest.mark.timeout(30)
def test_get_arrays_returns_contiguous_copies() -> None:
    # Prepare
    model = _mlp()
    adapter = TorchAdapter(model)
    # Execute
    arrays = adapter.get_arrays()
    arrays["0.bias"][:] = 123.0
    # Assert
    assert list(arrays) == list(model.state_dict())
    assert all(a.flags.c_contiguous for a in arrays.values())
    assert not torch.any(model[0].bias == 123.0)


@pytest.mark.timeout(30)
def test_batchnorm_buffers_are_arrays_too() -> None:
    # Prepare
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    adapter = TorchAdapter(model)
    adapter.train_epoch([(np.random.default_rng(0).random((8, 4)), np.zeros((8, 3)))])
    # Execute
    arrays = adapter.get_arrays()
    specs = adapter.array_specs()
    # Assert
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    assert int(arrays["1.num_batches_tracked"]) == 1
    assert {"1.running_mean", "1.running_var"} <= set(arrays)
    assert specs["1.num_batches_tracked"] == ("int64", ())
    assert specs["0.weight"] == ("float32", (3, 4))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("0.bias"), "missing"),
        (lambda a: a.update(extra=np.zeros(1, np.float32)), "unexpected"),
        (lambda a: a.update({"0.weight": np.zeros((2, 2), np.float32)}), "shape"),
        (lambda a: a.update({"0.weight": np.zeros((32, 64), np.int64)}), "dtype"),
    ],
)
def test_set_arrays_rejects_mismatches_and_changes_nothing(mutate: object, message: str) -> None:
    # Prepare
    adapter = TorchAdapter(_mlp())
    before = adapter.get_arrays()
    bad = {name: np.zeros_like(value) for name, value in before.items()}
    mutate(bad)  # type: ignore[operator]
    # Execute / Assert
    with pytest.raises(ConfigurationError, match=message):
        adapter.set_arrays(bad)
    assert all(np.array_equal(before[k], v) for k, v in adapter.get_arrays().items())


@pytest.mark.timeout(30)
def test_set_arrays_accepts_other_float_precision() -> None:
    # Prepare
    adapter = TorchAdapter(_mlp())
    arrays = {k: v.astype(np.float64) + 1 for k, v in adapter.get_arrays().items()}
    # Execute
    adapter.set_arrays(arrays)
    # Assert
    assert np.allclose(adapter.get_arrays()["0.weight"], arrays["0.weight"])


@pytest.mark.timeout(30)
def test_step_hook_runs_once_per_step_with_consistent_model() -> None:
    # Prepare
    adapter = TorchAdapter(_mlp())
    seen: list[int] = []

    def hook(steps: int) -> None:
        seen.append(steps)
        assert not torch.is_grad_enabled() or all(
            p.grad is not None for p in adapter.model.parameters()
        )
        adapter.set_arrays(adapter.get_arrays())  # allowed from the hook

    batches = _batches(np.zeros((10, 64)), np.zeros(10, dtype=np.int64), 3)
    # Execute
    result = adapter.train_epoch(batches, step_hook=hook)
    # Assert
    assert seen == [1, 2, 3, 4] and result.steps == 4 and result.samples == 10


@pytest.mark.timeout(30)
def test_optimizer_is_created_once_with_the_factory_given_the_model() -> None:
    # Prepare: the paper's factory, `lambda model: optim.AdamW(model.parameters())`
    model = _mlp()
    received: list[object] = []

    def create(given: nn.Module) -> torch.optim.Optimizer:
        received.append(given)
        return torch.optim.AdamW(given.parameters(), lr=0.01)

    adapter = TorchAdapter(model, create)
    batch = [(np.zeros((2, 64)), np.zeros(2, dtype=np.int64))]
    # Execute
    adapter.train_epoch(batch)
    adapter.train_epoch(batch)
    # Assert
    assert received == [model]
    assert isinstance(adapter.optimizer, torch.optim.AdamW)
    assert adapter.optimizer.param_groups[0]["params"] == list(model.parameters())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", [nn.Linear(2, 1), nn.Sequential(nn.Linear(2, 1))])
def test_a_factory_written_for_parameters_is_told_it_gets_the_model(model: nn.Module) -> None:
    # Prepare: an old-style factory that passes what it receives to the optimizer
    adapter = TorchAdapter(model, lambda params: torch.optim.SGD(params, lr=0.1))
    # Execute / Assert
    with pytest.raises(ConfigurationError) as caught:
        adapter.train_epoch([(np.zeros((2, 2)), np.zeros(2))])
    message = str(caught.value)
    assert "receives the model, not its parameters" in message
    assert "lambda model: torch.optim.AdamW(model.parameters())" in message


@pytest.mark.timeout(30)
def test_a_factory_that_returns_no_optimizer_is_refused() -> None:
    # Prepare
    adapter = TorchAdapter(nn.Linear(2, 1), lambda model: list(model.parameters()))  # type: ignore[arg-type,return-value]
    # Execute / Assert
    expected = r"returned a list, expected a torch\.optim\.Optimizer \(it has no zero_grad"
    with pytest.raises(ConfigurationError, match=expected):
        _ = adapter.optimizer


@pytest.mark.timeout(30)
def test_default_optimizer_is_adam_and_checkpoint_round_trips() -> None:
    # Prepare
    adapter = TorchAdapter(_mlp())
    assert adapter.checkpoint_state() == {"optimizer": None}
    adapter.train_epoch([(np.ones((2, 64)), np.ones(2, dtype=np.int64))])
    state = adapter.checkpoint_state()
    other = TorchAdapter(_mlp())
    # Execute
    other.load_checkpoint_state(state)
    # Assert
    assert isinstance(adapter.optimizer, torch.optim.Adam)
    assert other.checkpoint_state()["optimizer"]["state"][0]["step"] == 1


@pytest.mark.timeout(30)
def test_explicit_loss_and_gradient_clipping_are_used() -> None:
    # Prepare
    used: list[int] = []

    def loss(output: Tensor, target: Tensor) -> Tensor:
        used.append(1)
        return (output.sum() - target.sum()) ** 2 * 1e6

    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    adapter = TorchAdapter(
        model, lambda m: torch.optim.SGD(m.parameters(), lr=1.0), loss, max_grad_norm=0.01
    )
    # Execute
    adapter.train_epoch([(np.ones((2, 2)), np.zeros(2))])
    # Assert
    assert used == [1]
    assert float((model.weight.detach() - before).norm()) <= 0.0100001


@pytest.mark.timeout(30)
def test_torch_dataloader_batches_are_accepted() -> None:
    # Prepare
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.rand(10, 64, dtype=torch.float64), torch.arange(10) % 10)
    adapter = TorchAdapter(_mlp())
    # Execute
    result = adapter.train_epoch(DataLoader(data, batch_size=4))
    # Assert
    assert result.samples == 10 and result.steps == 3


@pytest.mark.timeout(30)
def test_empty_loader_and_bad_batches() -> None:
    # Prepare
    adapter = TorchAdapter(_mlp())
    # Execute
    empty = adapter.train_epoch([])
    # Assert
    assert empty.samples == 0 and math.isnan(empty.loss)
    with pytest.raises(ConfigurationError, match="pair"):
        adapter.train_epoch([np.zeros((2, 64))])
    with pytest.raises(ConfigurationError, match=r"nn\.Module"):
        TorchAdapter(object())  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_evaluate_restores_training_mode_and_changes_nothing() -> None:
    # Prepare
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    adapter = TorchAdapter(model)
    before = adapter.get_arrays()
    # Execute
    adapter.evaluate([(np.random.default_rng(0).random((5, 4)), np.zeros((5, 3)))])
    # Assert
    assert model.training
    assert all(np.array_equal(before[k], v) for k, v in adapter.get_arrays().items())


class _Strided(nn.Module):
    """A model whose buffer is a transposed (non-contiguous) view."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("table", torch.arange(6.0).reshape(2, 3).t())

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def test_set_arrays_writes_strided_and_contiguous_tensors_alike() -> None:
    # Prepare
    adapter = TorchAdapter(_Strided())
    arrays = {name: np.full_like(a, 7.5) for name, a in adapter.get_arrays().items()}
    assert not adapter.model.table.is_contiguous()

    # Execute
    adapter.set_arrays(arrays)

    # Assert: every entry now holds the new values, the strided buffer included.
    for name, array in adapter.get_arrays().items():
        np.testing.assert_array_equal(array, arrays[name], err_msg=name)
    assert adapter.model.table.shape == (3, 2)


def test_tuning_the_shared_thread_makes_only_that_thread_single_threaded() -> None:
    import threading

    # Prepare: two kernel threads for the process (this module runs with one).
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: dict[str, int] = {}

    def lane() -> None:
        TorchAdapter(_mlp()).tune_shared_thread()
        seen["lane"] = torch.get_num_threads()

    def later() -> None:
        seen["later"] = torch.get_num_threads()

    try:
        # Execute
        for target in (lane, later):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join(10)

        # Assert: the tuned thread runs one; this thread and threads started later keep two.
        assert seen == {"lane": 1, "later": 2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_set_arrays_bumps_the_version_so_autograd_refuses_a_stale_graph() -> None:
    # Prepare: a graph that saved the weights, then new weights written in.
    model = nn.Linear(3, 2)
    adapter = TorchAdapter(model)
    loss = (model(torch.ones(1, 3, requires_grad=True)) ** 2).sum()  # saves the weight
    before = model.weight._version

    # Execute
    adapter.set_arrays({k: np.zeros_like(v) for k, v in adapter.get_arrays().items()})

    # Assert
    assert model.weight._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
