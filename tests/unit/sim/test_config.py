"""SimConfig: TOML/JSON loading, the JSON round trip, strict validation and replace()."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.config import FaultEvent, SimConfig, load_config

pytestmark = pytest.mark.timeout(30)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "simulation.toml"

FULL_TOML = """
nodes = 6
epochs = 4
dataset = "digits"
partition = "shards:k=2"
model = "logreg"
topology = "grid:cols=3"
aggregator = "trimmed-mean:trim=0.2"
mode = "peer"
modes = { "1" = "seeding", "2" = "offline" }
policies = { "0" = "leech-until:samples=40" }
faults = [
  { epoch = 1, node = 4, action = "kill" },
  { epoch = 3, node = 4, action = "restart" },
]
train-limit = 600
sync = false
share_every = 3
lr = 0.01
seed = 7
"""


def write(tmp_path: Path, text: str, name: str = "sim.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**values: Any) -> str:
    """The message of the ConfigurationError that from_mapping(values) raises."""
    with pytest.raises(ConfigurationError) as caught:
        SimConfig.from_mapping(values)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- loading


def test_load_config_reads_every_kind_of_value(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_TOML)

    config = load_config(path)

    assert (config.nodes, config.epochs, config.model, config.seed) == (6, 4, "logreg", 7)
    assert config.train_limit == 600  # "train-limit" is read as train_limit
    assert config.modes == {"1": "seeding", "2": "offline"}
    assert config.policies == {"0": "leech-until:samples=40"}
    assert config.faults == (FaultEvent(1, 4, "kill"), FaultEvent(3, 4, "restart"))
    assert config.sync is False and config.share_every == 3


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == SimConfig()


def test_load_config_reads_json_too(tmp_path: Path) -> None:
    config = SimConfig(nodes=3, topology="star", faults=(FaultEvent(0, 1, "pause"),))
    path = write(tmp_path, json.dumps(config.to_json()), "config.json")

    assert load_config(path) == config


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"nope\.toml does not exist; check the path"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file_and_the_position(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes = = 3\n")

    with pytest.raises(ConfigurationError, match=r"sim\.toml is not valid TOML.*line 1"):
        load_config(path)


# ---------------------------------------------------------------------------- round trip


def test_to_json_is_plain_json_that_reads_back_equal(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_TOML))

    data = json.loads(json.dumps(config.to_json()))

    assert SimConfig.from_mapping(data) == config
    assert data["faults"][0] == {"epoch": 1, "node": 4, "action": "kill"}


def test_to_json_names_every_field() -> None:
    names = {f.name for f in dataclasses.fields(SimConfig)}

    assert set(SimConfig().to_json()) == names


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.integers(1, 64),
    epochs=st.integers(1, 50),
    seed=st.integers(0, 2**31),
    lr=st.floats(1e-5, 1.0),
    sync=st.booleans(),
    share_every=st.none() | st.integers(1, 10),
    drop_rate=st.floats(0.0, 0.99),
    topology=st.sampled_from(["ring", "star", "fully-connected", "random-regular:k=2"]),
    data=st.data(),
)
def test_json_round_trip_property(
    nodes: int,
    epochs: int,
    seed: int,
    lr: float,
    sync: bool,
    share_every: int | None,
    drop_rate: float,
    topology: str,
    data: st.DataObject,
) -> None:
    node = st.integers(0, nodes - 1)
    faults = data.draw(
        st.lists(
            st.builds(
                FaultEvent,
                epoch=st.integers(0, epochs),
                node=node,
                action=st.sampled_from(["kill", "restart", "pause", "resume"]),
            ),
            max_size=4,
        )
    )
    modes = data.draw(st.dictionaries(node.map(str), st.sampled_from(["peer", "seeding"])))
    config = SimConfig(
        nodes=nodes,
        epochs=epochs,
        seed=seed,
        lr=lr,
        sync=sync,
        share_every=None if sync else share_every,
        drop_rate=drop_rate,
        topology=topology,
        faults=tuple(faults),
        modes=modes,
    )

    assert SimConfig.from_mapping(json.loads(json.dumps(config.to_json()))) == config


# ---------------------------------------------------------------------------- replace


def test_replace_changes_only_the_given_fields() -> None:
    config = SimConfig(nodes=4, topology="star", seed=3)

    changed = config.replace(epochs=2, topology="ring")

    assert (changed.epochs, changed.topology) == (2, "ring")
    assert (changed.nodes, changed.seed) == (4, 3)
    assert (config.epochs, config.topology) == (10, "star")  # the original is untouched


def test_replace_validates_again() -> None:
    config = SimConfig(nodes=4, faults=(FaultEvent(1, 3, "kill"),))

    with pytest.raises(ConfigurationError, match="fault names node 3 but there are 2 nodes"):
        config.replace(nodes=2)
    with pytest.raises(ConfigurationError, match="did you mean 'epochs'"):
        config.replace(epoch=3)


def test_replace_accepts_fault_mappings() -> None:
    config = SimConfig(nodes=4).replace(faults=[{"epoch": 2, "node": 1, "action": "pause"}])

    assert config.faults == (FaultEvent(2, 1, "pause"),)


# ---------------------------------------------------------------------------- validation


def test_unknown_key_suggests_the_closest_one() -> None:
    message = config_error(nodse=8)

    assert message == "unknown config key 'nodse'; did you mean 'nodes'?"


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    assert "valid keys: nodes, epochs" in config_error(zzzzzz=1)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", "ten", "expected int"),
        ("nodes", 2.5, "expected int"),
        ("nodes", True, "expected int"),
        ("lr", "fast", "expected int or float"),
        ("sync", "yes", "expected bool"),
        ("topology", 3, "expected str"),
    ],
)
def test_wrong_types_are_refused(key: str, value: object, expected: str) -> None:
    message = config_error(**{key: value})

    assert message.startswith(f"{key} = {value!r} has the wrong type")
    assert message.endswith(expected)


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"nodes": 0}, r"nodes must be >= 1, got 0; set nodes = 8"),
        ({"epochs": -1}, r"epochs must be >= 1"),
        ({"backend": "spark"}, r"unknown backend 'spark'; use one of memory, zmq, process, ray"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
        ({"churn_rate": -0.1}, r"churn_rate must be in \[0, 1\)"),
        ({"delay_ms": -1}, r"delay_ms must be >= 0"),
        ({"lr": 0}, r"lr must be > 0"),
        ({"batch_size": 0}, r"batch_size must be >= 1"),
        ({"threads": 0}, r"threads must be >= 1"),
        ({"train_limit": 0}, r"train_limit must be >= 1, got 0; .*leave it out \(all samples\)"),
        ({"share_every": 0}, r"share_every must be >= 1.*share once per epoch"),
        ({"round_timeout": 0}, r"round_timeout must be > 0"),
    ],
)
def test_out_of_range_values_are_refused(values: dict[str, Any], pattern: str) -> None:
    assert re.search(pattern, config_error(**values))


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"topology": "rign"}, r"unknown topology 'rign' \(did you mean 'ring'\?\)"),
        ({"topology": "random-regular"}, r"topology 'random-regular' needs parameter 'k'"),
        ({"aggregator": "fedavgg"}, r"unknown aggregator 'fedavgg' \(did you mean 'fedavg'"),
        ({"partition": "iidd"}, r"unknown partitioner 'iidd'.*did you mean 'iid'"),
        ({"partition": "dirichlet:alpah=1"}, r"did you mean 'alpha'"),
        ({"model": "mlpp"}, r"unknown model 'mlpp'; use one of mlp, cnn, logreg"),
        ({"mode": "peeer"}, r"mode = 'peeer': unknown operating mode.*peer, seeding"),
    ],
)
def test_bad_specs_fail_when_the_config_is_built(values: dict[str, Any], pattern: str) -> None:
    assert re.search(pattern, config_error(**values))


def test_sync_rounds_every_few_steps_are_refused() -> None:
    message = config_error(sync=True, share_every=2)

    assert message.startswith("sync = true cannot be combined with share_every = 2")
    assert message.endswith(
        "set sync = false (gossip) to share every few steps, or leave share_every out"
    )
    assert SimConfig(sync=False, share_every=2).share_every == 2


def test_fault_validation() -> None:
    def fault(**entry: object) -> str:
        return config_error(nodes=4, epochs=5, faults=[entry])

    assert "fault action 'explode' is unknown; use one of kill, restart, pause, resume" in fault(
        epoch=1, node=0, action="explode"
    )
    assert "fault names node 4 but there are 4 nodes (0..3)" in fault(
        epoch=1, node=4, action="kill"
    )
    assert "fault at epoch 6 is outside 0..5" in fault(epoch=6, node=0, action="kill")
    assert "needs keys epoch, node and action" in fault(epoch=1, node=0)
    assert "fault has unknown keys ['when']" in fault(epoch=1, node=0, action="kill", when=2)
    assert "fault epoch = 'one' is not an integer" in fault(epoch="one", node=0, action="kill")
    assert "faults = 3 is not a list" in config_error(faults=3)


@pytest.mark.parametrize("table", ["modes", "policies"])
def test_mode_and_policy_tables_need_node_index_keys(table: str) -> None:
    value = "seeding" if table == "modes" else "leech-until:samples=5"

    assert f"{table} has key 'x', expected a node index 0..3" in config_error(
        nodes=4, **{table: {"x": value}}
    )
    assert f"{table} has key '4', expected a node index 0..3" in config_error(
        nodes=4, **{table: {"4": value}}
    )
    assert f"{table} = 'x' is not a table" in config_error(**{table: "x"})


def test_mode_and_policy_values_are_checked_per_node() -> None:
    assert config_error(nodes=4, modes={"1": "seedng"}).startswith(
        "modes.\"1\" = 'seedng': unknown operating mode 'seedng'"
    )
    assert config_error(nodes=4, policies={"2": "leech-untl:samples=5"}).startswith(
        "policies.\"2\": unknown policy 'leech-untl' (did you mean 'leech-until'?)"
    )
    assert "did you mean 'samples'" in config_error(nodes=4, policies={"2": "leech-until:sample=5"})


def test_valid_specs_pass() -> None:
    config = SimConfig(
        nodes=8,
        topology="random-regular:k=4,redraw_every=5",
        aggregator="multi-krum:f=1,m=3",
        partition="dirichlet:alpha=0.3",
        mode="LEECHING",
        modes={"1": "offline"},
        policies={"0": "after-epochs:epochs=2,then=peer"},
    )

    assert config.mode == "LEECHING"


# ---------------------------------------------------------------------------- the example


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    text = EXAMPLE.read_text(encoding="utf-8")

    lines = [*text.splitlines(), ""]

    assert config.dataset == "digits" and config.backend == "memory"
    for field in dataclasses.fields(SimConfig):
        found = [i for i, line in enumerate(lines) if re.match(rf"(# )?{field.name} = ", line)]
        assert len(found) == 1, f"examples/simulation.toml should set {field.name} once"
        here, after = lines[found[0]], lines[found[0] + 1]
        commented = "#" in here.lstrip("# ") or after.lstrip().startswith("#")
        assert commented, f"examples/simulation.toml has no comment on {field.name}"


# ------------------------------------------------------------------ the ray backend


def test_ray_backend_options_default_to_a_local_instance_and_one_cpu_per_node() -> None:
    config = SimConfig.from_mapping({"backend": "ray"})

    assert (config.ray_address, config.ray_num_cpus_per_node) == (None, 1.0)
    assert config.ray_num_gpus_per_node == 0.0


def test_ray_backend_takes_fractional_resources_and_a_cluster_address() -> None:
    config = SimConfig.from_mapping(
        {"backend": "ray", "ray_address": "auto", "ray_num_cpus_per_node": 0.5}
    )

    assert (config.ray_address, config.ray_num_cpus_per_node) == ("auto", 0.5)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("ray_num_cpus_per_node", -1, "ray_num_cpus_per_node must be a number >= 0"),
        ("ray_num_gpus_per_node", float("nan"), "ray_num_gpus_per_node must be a number >= 0"),
        ("ray_num_cpus_per_node", "2", "ray_num_cpus_per_node = '2' has the wrong type"),
        ("ray_address", "", "ray_address is empty"),
        ("ray_adress", "auto", "did you mean 'ray_address'"),
    ],
)
def test_bad_ray_options_are_refused(key: str, value: object, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        SimConfig.from_mapping({"backend": "ray", key: value})
