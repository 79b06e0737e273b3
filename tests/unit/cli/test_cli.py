"""The ``scatterbrained`` command line: help texts, ``keys generate``, a small simulate run."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from scatterbrained.cli.main import main
from scatterbrained.cli.progress import fmt_bytes, print_summary
from scatterbrained.cli.simulate import _apply_overrides, demo_config, demo_preset
from scatterbrained.sim.config import FaultEvent, SimConfig, load_config
from scatterbrained.sim.runner import RunResult
from scatterbrained.transport.security import KeyPair, load_public_key

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "simulation.toml"


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def squash(text: str) -> str:
    """``text`` without whitespace (rich wraps long lines at the console width)."""
    return "".join(text.split())


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ([], ["demo", "simulate", "node", "peers", "keys", "new", "--verbose", "--version"]),
        (["new"], ["NAME", "model.py", "data.py", "scatterbrained.toml"]),
        (["demo"], ["--nodes", "--epochs", "--dataset", "--topology", "--out", "n005"]),
        (
            ["simulate"],
            [
                "CONFIG_FILE",
                "--nodes",
                "--partition",
                "--model",
                "--aggregator",
                "--backend",
                "--seed",
                "--sync / --gossip",
                "--centralized / --no-centralized",
                "--local-only",
                "--set KEY=VALUE",
                "--list-keys",
                "scatterbrained.toml",
            ],
        ),
        (
            ["node"],
            [
                "--namespace",
                "--model",
                "--data",
                "--bootstrap",
                "--discovery",
                "--mode",
                "--policy",
                "--keys",
                "--allow",
                "--checkpoint-dir",
                "--sync / --gossip",
                "--round-timeout",
                "--share-every",
                "--gossip-wait",
                "--sync-timeout",
                "--serve / --no-serve",
            ],
        ),
        (["peers"], ["NAMESPACE", "--timeout", "--discovery"]),
        (["keys"], ["generate", "CurveZMQ"]),
        (["keys", "generate"], ["PATH", "--force", "0600"]),
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(
    argv: list[str], mentions: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main([*argv, flag], capsys)

    assert code == 0, err
    assert out.startswith("Usage: ")
    for text in mentions:
        assert text in out, f"{' '.join(argv) or 'scatterbrained'} --help lacks {text!r}"


@pytest.mark.parametrize(
    ("command", "folder"), [("simulate", "<runfolder>"), ("demo", "<runfolder>"), ("node", "runs")]
)
def test_export_flags_help_names_the_folder_the_command_really_uses(
    command: str, folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main([command, "--help"], capsys)

    assert code == 0
    assert f"(default:{folder}/tensorboard)" in squash(out)
    assert f"(default:afilestore{folder}/mlruns)" in squash(out)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--version"], capsys)

    assert code == 0
    assert "version" in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["simulat"], capsys)

    assert code == 2
    assert "No such command 'simulat'" in err


def test_node_refuses_an_unknown_mode_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["node", "-n", "x", "--mode", "peeer"], capsys)

    assert code == 2
    assert "Invalid value for '--mode': 'peeer' is not one of 'peer'" in err
    assert "listening" not in out


# ---------------------------------------------------------------------------- keys


def test_keys_generate_writes_a_private_secret_and_a_public_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"

    code, out, err = run_main(["keys", "generate", str(path)], capsys)

    assert code == 0, err
    public_path = tmp_path / "node.key.pub"  # the README's name
    pair = KeyPair.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_public_key(public_path) == pair.public
    assert "secret-key" not in public_path.read_text(encoding="ascii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key", "node.key.pub"]
    assert out.splitlines() == [
        f"wrote the secret key: {path} (mode 0600, keep it private; --keys {path})",
        f"wrote the public key: {public_path} (hand it to peers; --allow {public_path})",
        f"public key: {pair.public}",
    ]


def test_keys_generate_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    assert run_main(["keys", "generate", str(path)], capsys)[0] == 0
    first = KeyPair.load(path)

    code, _, err = run_main(["keys", "generate", str(path)], capsys)

    assert code == 2
    assert err.strip() == f"error: {path} exists; pass --force to overwrite it"
    assert KeyPair.load(path) == first


def test_keys_generate_refuses_to_overwrite_a_lone_public_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "node.key.pub").write_text("someone else's key", encoding="ascii")

    code, _, err = run_main(["keys", "generate", str(tmp_path / "node.key")], capsys)

    assert code == 2
    assert err.strip() == (
        f"error: {tmp_path / 'node.key.pub'} exists; pass --force to overwrite it"
    )
    assert not (tmp_path / "node.key").exists()


def test_keys_generate_force_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.key"
    assert run_main(["keys", "generate", str(path)], capsys)[0] == 0
    first = KeyPair.load(path)

    code, _, err = run_main(["keys", "generate", str(path), "--force"], capsys)

    assert code == 0, err
    assert KeyPair.load(path).public != first.public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_generate_into_a_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing" / "node.key"

    code, out, err = run_main(["keys", "generate", str(path)], capsys)

    assert code == 2
    assert err.strip().splitlines() == [
        f"error: cannot write the key pair to {path}: No such file or directory; "
        "create the folder first or choose a writable path"
    ]
    assert "Traceback" not in out + err


# ---------------------------------------------------------------------------- simulate


@pytest.mark.timeout(120)
def test_simulate_runs_the_example_with_flags_overriding_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], torch_ready: None
) -> None:
    out_dir = tmp_path / "run"
    argv = [
        "simulate",
        str(EXAMPLE),
        *("--nodes", "4", "--epochs", "2", "--no-centralized"),
        *("--out", str(out_dir)),
    ]

    code, out, err = run_main(argv, capsys)

    assert code == 0, err
    config = load_config(out_dir / "config.json")
    assert (config.nodes, config.epochs, config.centralized) == (4, 2, False)
    assert (config.sync, config.share_every) == (False, 2)  # the file's gossip, kept
    assert config.modes == {"0": "leeching", "3": "seeding"}  # the file's, kept
    assert config.lr == 0.05 and config.topology == "ring"
    rows = (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4 * 2
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["nodes"] == 4 and summary["nodes_finished"] == 4
    assert "Summary" in out and squash(f"run folder: {out_dir}") in squash(out)
    assert "epoch   2/2" in out


def test_sync_flag_against_a_gossip_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"

    code, out, err = run_main(["simulate", str(EXAMPLE), "--sync", "--out", str(out_dir)], capsys)

    assert code == 2
    assert err.strip().splitlines() == [
        "error: sync = true cannot be combined with share_every = 2: nodes with different "
        "shard sizes run different numbers of rounds and stall for round_timeout; "
        "set sync = false (gossip) to share every few steps, or leave share_every out"
    ]
    assert not out_dir.exists()
    assert "Traceback" not in out + err


def test_overrides_drop_what_names_removed_nodes() -> None:
    config = SimConfig(
        nodes=8,
        epochs=10,
        modes={"1": "seeding", "6": "leeching"},
        policies={"7": "leech-until:samples=5"},
        faults=(FaultEvent(5, 2, "kill"), FaultEvent(8, 6, "kill")),
    )

    changed = _apply_overrides(config, {"nodes": 4, "epochs": 3, "topology": None})

    assert (changed.nodes, changed.epochs, changed.topology) == (4, 3, "ring")
    assert changed.modes == {"1": "seeding"}
    assert changed.policies == {}
    assert changed.faults == (FaultEvent(3, 2, "kill"),)  # clamped to the new epochs


def test_demo_config_is_valid_for_both_datasets() -> None:
    digits = demo_config("digits")
    fashion = demo_config("fashion-mnist")

    assert (digits.nodes, digits.model, digits.topology) == (16, "mlp", "random-regular:k=4")
    assert fashion.model == "cnn" and fashion.test_limit == 2000
    for config in (digits, fashion):
        assert {f.action for f in config.faults} == {"kill", "restart"}
        assert config.modes == {"0": "leeching"} and "0" in config.policies


@pytest.mark.parametrize(
    ("dataset", "nodes", "batch", "lr"),
    [
        ("digits", 64, 4, 0.0104),  # 21 samples a node: batch 32 made one step an epoch
        ("digits", 16, 10, 0.006),
        ("fashion-mnist", 16, 32, 0.002),  # plenty of data: the presets as they were
        ("fashion-mnist", 64, 32, 0.002),
    ],
)
def test_demo_presets_give_every_node_several_steps_an_epoch(
    dataset: str, nodes: int, batch: int, lr: float
) -> None:
    assert demo_preset(dataset, nodes) == (batch, lr)
    config = demo_config(dataset, nodes)
    assert (config.nodes, config.batch_size, config.lr) == (nodes, batch, lr)


def test_summary_says_when_churn_happened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = {
        "nodes": 4,
        "nodes_finished": 4,
        "epochs": 6,
        "dataset": "digits",
        "topology": "ring",
        "mean_accuracy": 0.9,
        "min_accuracy": 0.8,
        "max_accuracy": 0.95,
        "centralized_accuracy": None,
        "bytes_total": 2048,
        "wall_s": 1.5,
        "events": [{"node": "n002", "epoch": 3, "event": "killed"}],
    }
    result = RunResult(tmp_path, summary, [], (tmp_path / "accuracy.png",))

    print_summary(result)

    out = capsys.readouterr().out
    # the row of epoch 3 carries the event: the kill happened after epoch 2, before epoch 3
    assert "churn: n002 killed before epoch 3" in out
    assert "2.0 kB" in out and "0.900" in out  # SI units: 2048 B is 2.0 kB
    assert squash(f"plot: {tmp_path / 'accuracy.png'}") in squash(out)


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (2048, "2.0 kB"),
        (1_048_576, "1.0 MB"),  # one MiB is 1.05 MB, shown as 1.0 MB
        (2_300_000, "2.3 MB"),  # 2.19 MiB: printed as "2.2 MB" before
        (26_500_000, "26.5 MB"),
        (999_960, "1.0 MB"),
        (3_000_000_000, "3.0 GB"),
    ],
)
def test_byte_counts_are_printed_in_si_units(count: int, shown: str) -> None:
    assert fmt_bytes(count) == shown


# ---------------------------------------------------------------------------- node


def test_node_with_keys_but_no_allow_list_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "node.key"
    KeyPair.generate().save(key)

    code, out, err = run_main(["node", "-n", "x", "--keys", str(key), "--discovery", "off"], capsys)

    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --keys {key} needs --allow: without an allow-list every peer is refused; "
        "pass --allow PEER_KEY (a public key or a peer's .pub file) once per peer"
    ]
    assert "listening" not in out


def test_node_with_an_allow_list_but_no_keys_refuses_to_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    peer = KeyPair.generate().public

    code, out, err = run_main(["node", "-n", "x", "--allow", peer, "--discovery", "off"], capsys)

    assert code == 2
    assert err.startswith("error: --allow needs --keys") and len(err.strip().splitlines()) == 1
    assert "listening" not in out


def test_node_with_a_missing_key_file_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, peer = tmp_path / "nope.key", KeyPair.generate().public

    code, _, err = run_main(
        ["node", "-n", "x", "--keys", str(key), "--allow", peer, "--discovery", "off"], capsys
    )

    assert code == 2
    assert err.strip() == (
        f"error: cannot read the key file {key}: No such file or directory; "
        f"create it with 'scatterbrained keys generate {key}'"
    )


@pytest.mark.parametrize(
    ("argv", "given"), [(["--id", "c"], "--id c"), ([], "no --id (a random id)")]
)
def test_node_outside_its_graph_topology_refuses_to_start(
    argv: list[str], given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(
        ["node", "-n", "x", "--topology", "graph:edges=a~b", *argv, "--discovery", "off"], capsys
    )

    assert code == 2
    assert err.strip() == (
        f"error: the graph topology names nodes a, b, but this node has {given}: it would "
        "exchange with nobody; pass --id with one of those ids, or add an edge naming it"
    )
    assert "listening" not in out


def test_node_topology_typo_names_the_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["node", "-n", "x", "--topology", "grid:colums=3"], capsys)

    assert code == 2
    assert err.strip() == (
        "error: topology 'grid' does not take parameter(s) colums (did you mean 'cols'?); "
        "valid parameters: cols"
    )
