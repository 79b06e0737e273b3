"""Every expected mistake ends the CLI with ONE ``error:`` line naming the fix, and exit 2.

Most cases call ``main([...])`` in this process; a few run ``python -m
scatterbrained.cli.main`` for real, to check the exit status and that no traceback is
printed. No case trains anything: each fails before the first epoch, and before the run
folder is created.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scatterbrained.cli.main import main

pytestmark = pytest.mark.timeout(60)

SRC = Path(__file__).resolve().parents[3] / "src"


def write_config(tmp_path: Path, body: str) -> Path:
    """A config file whose run folder is ``tmp_path / "run"`` (which must never appear)."""
    path = tmp_path / "sim.toml"
    path.write_text(f'{body}\nepochs = 1\nout = "{tmp_path / "run"}"\n', encoding="utf-8")
    return path


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, out: str, err: str, *fragments: str) -> str:
    """Exit 2, exactly one stderr line starting with ``error:``, no traceback anywhere."""
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# ----------------------------------------------------------------------- in this process


def test_typo_in_a_key_suggests_the_right_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "nodse = 8")

    code, out, err = run_main(["simulate", str(config)], capsys)

    line = assert_one_error_line(code, out, err)
    assert line == "error: unknown config key 'nodse'; did you mean 'nodes'?"
    assert not (tmp_path / "run").exists()


def test_unknown_topology_fails_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'topology = "rign"')

    code, out, err = run_main(["simulate", str(config)], capsys)

    assert_one_error_line(code, out, err, "unknown topology 'rign'", "did you mean 'ring'?")
    assert not (tmp_path / "run").exists()  # no run folder: no node started, nothing trained
    assert "loading" not in out  # the dataset was not even loaded


def test_unknown_topology_given_as_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(
        ["simulate", "--topology", "star:centre=n000", "--out", str(tmp_path / "run")], capsys
    )

    assert_one_error_line(code, out, err, "topology 'star' does not take parameter(s) centre")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCATTERBRAINED_FASHION_MNIST", str(tmp_path / "nonexistent"))
    config = write_config(tmp_path, 'dataset = "fashion-mnist"\nmodel = "cnn"')

    code, out, err = run_main(["simulate", str(config)], capsys)

    assert_one_error_line(
        code,
        out,
        err,
        "Fashion-MNIST not found",
        str(tmp_path / "nonexistent"),
        "apt-get install dataset-fashion-mnist",
        "SCATTERBRAINED_FASHION_MNIST=DIR",
    )
    assert not (tmp_path / "run").exists()


def test_more_nodes_than_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, 'nodes = 5000\ndataset = "digits"')

    code, out, err = run_main(["simulate", str(config)], capsys)

    line = assert_one_error_line(code, out, err)
    assert line == (
        "error: 5000 nodes but digits has only 1347 training samples; use at most 1347 nodes"
    )
    assert not (tmp_path / "run").exists()


def test_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sim.toml"
    config.write_text('epochs = "ten"\n', encoding="utf-8")

    code, out, err = run_main(["simulate", str(config)], capsys)

    line = assert_one_error_line(code, out, err)
    assert line == "error: epochs = 'ten' has the wrong type; expected int"


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"

    code, out, err = run_main(["simulate", str(missing)], capsys)

    assert_one_error_line(code, out, err, f"config file {missing} does not exist; check the path")


def test_invalid_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sim.toml"
    config.write_text("nodes = = 3\n", encoding="utf-8")

    code, out, err = run_main(["simulate", str(config)], capsys)

    assert_one_error_line(code, out, err, f"{config} is not valid TOML/JSON", "line 1")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('mode = "peeer"', "unknown operating mode 'peeer'"),
        ('modes = { "1" = "seedng" }', "modes.\"1\" = 'seedng'"),
        ('aggregator = "krum:g=1"', "aggregator 'krum' does not take parameter(s) g"),
        ('policies = { "0" = "leech-untl" }', "did you mean 'leech-until'?"),
        ('partition = "dirichlet:alpah=0.5"', "did you mean 'alpha'?"),
        ('model = "cnn"', 'use model = "mlp"'),  # digits are flat: found when data loads
        ('dataset = "digitz"', "did you mean 'digits'?"),
        ('faults = [{ epoch = "one", node = 0, action = "kill" }]', "is not an integer"),
        ('faults = [{ epoch = 1, node = 9, action = "kill" }]', "fault names node 9"),
        ("faults = 3", "faults = 3 is not a list"),
        ("train_limit = 0", "train_limit must be >= 1"),
    ],
)
def test_other_config_mistakes(
    body: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"nodes = 3\n{body}")

    code, out, err = run_main(["simulate", str(config)], capsys)

    assert_one_error_line(code, out, err, fragment)
    assert not (tmp_path / "run").exists()


def test_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["simulate", "--nodes", "many"], capsys)

    assert code == 2
    assert "Invalid value for '--nodes': 'many' is not a valid integer" in err
    assert "Traceback" not in out + err


def test_flags_are_validated_like_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["simulate", "--nodes", "0", "--out", str(tmp_path / "r")], capsys)

    assert_one_error_line(code, out, err, "nodes must be >= 1, got 0")


# ----------------------------------------------------------------------- a real process


def run_cli_process(
    args: list[str], tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        "SCATTERBRAINED_DISCOVERY": "loopback",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "scatterbrained.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
        env=environment,
        check=False,
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("nodse = 8", "did you mean 'nodes'?"),
        ('topology = "rign"', "did you mean 'ring'?"),
        ('dataset = "fashion-mnist"', "apt-get install dataset-fashion-mnist"),
    ],
)
def test_real_process_exits_2_with_one_line_and_no_traceback(
    body: str, fragment: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, body)

    done = run_cli_process(
        ["simulate", str(config)], tmp_path, SCATTERBRAINED_FASHION_MNIST="/nonexistent"
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_real_process_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_text("keep me", encoding="utf-8")

    done = run_cli_process(["keys", "generate", str(key)], tmp_path)

    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {key} exists; pass --force to overwrite it"
    assert key.read_text(encoding="utf-8") == "keep me"


# ------------------------------------------------------------- topologies naming node ids


@pytest.mark.parametrize(
    ("topology", "fragment"),
    [
        (
            "graph:edges=a~b|n000~n001",
            "topology = 'graph:edges=a~b|n000~n001' names node id(s) a, b that no node has; "
            "valid node ids: n000, n001, n002, n003; use those ids (e.g. graph:edges=n000~n001)",
        ),
        ("graph:edges=n000~n004", "names node id(s) n004 that no node has"),
        ("star:center=server", "names node id(s) server that no node has"),
        ("neighbourhoods:hubs=h1|n001", "names node id(s) h1 that no node has"),
        ("graph", "topology 'graph' needs parameter 'edges' with at least one edge"),
        (
            "grid:colums=3",
            "topology 'grid' does not take parameter(s) colums (did you mean 'cols'?); "
            "valid parameters: cols",
        ),
        ("random-regular:kk=3,seed=1", "parameter(s) kk (did you mean 'k'?)"),
    ],
)
def test_topology_naming_unknown_nodes_or_parameters_is_one_error(
    topology: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f'nodes = 4\ntopology = "{topology}"')

    code, out, err = run_main(["simulate", str(config)], capsys)

    assert_one_error_line(code, out, err, fragment)
    assert not (tmp_path / "run").exists()
    assert "loading" not in out  # found before the dataset was loaded


def test_a_graph_of_simulated_ids_passes_the_check() -> None:
    from scatterbrained.cli.simulate import check_runnable
    from scatterbrained.sim.config import SimConfig

    check_runnable(SimConfig(nodes=3, topology="graph:edges=n000~n001|n001~n002"))


# ----------------------------------------------------------------------- without torch

#: Run first in a child interpreter: `import torch` fails there as if it were not installed.
BLOCK_TORCH = {
    "finder": (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
    ),
    "sys.modules": "import sys\nsys.modules['torch'] = None\n",
}


def run_without_torch(
    how: str, args: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    code = (
        BLOCK_TORCH[how] + f"from scatterbrained.cli.main import main\nsys.exit(main({args!r}))\n"
    )
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent)]),
        "SCATTERBRAINED_DISCOVERY": "loopback",
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
        env=environment,
        check=False,
    )


@pytest.mark.parametrize("how", sorted(BLOCK_TORCH))
@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_without_torch_the_simulator_says_how_to_install_it(
    how: str, command: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"

    done = run_without_torch(
        how,
        [command, "--nodes", "2", "--epochs", "1", "--dataset", "digits", "--out", str(out)],
        tmp_path,
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "needs PyTorch" in lines[0] and "pip install 'scatterbrained[torch]'" in lines[0]
    assert not out.exists()  # no half-made run folder


def test_without_torch_a_node_with_a_torch_model_says_how_to_install_it(tmp_path: Path) -> None:
    done = run_without_torch(
        "finder",
        ["node", "-n", "x", "--model", "examples.deploy:model", "--discovery", "off"],
        tmp_path,
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: 'examples.deploy:model' needs PyTorch, which cannot be imported "
        "(No module named 'torch'); install it with pip install 'scatterbrained[torch]'"
    ]
    assert "listening" not in done.stdout


# ------------------------------------------------------- your own module:function, broken

USER_MODULE = """
import numpy as np

def raises(*args, **kwargs):
    raise ValueError("disk on fire")

def returns_int(*args, **kwargs):
    return 42

def big_mismatch():
    return np.zeros((3000, 64), dtype="float32"), np.zeros(2999, dtype="int64")
"""


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["simulate", "--dataset", "nomod_x:load"],
            ["dataset = 'nomod_x:load': cannot import 'nomod_x'"],
        ),
        (
            ["simulate", "--dataset", "mine:absent"],
            ["dataset = 'mine:absent': module 'mine' has no attribute 'absent'"],
        ),
        (
            ["simulate", "--dataset", "mine:raises"],
            ["dataset = 'mine:raises' raised ValueError: disk on fire at ", "mine.py:5"],
        ),
        (
            ["simulate", "--model", "mine:raises"],
            ["model = 'mine:raises' raised ValueError: disk on fire at "],
        ),
        (["simulate", "--dataset", "mine:returns_int"], ["mine:returns_int() = 42: expected"]),
        (["simulate", "--model", "mine:returns_int"], ["returned 42; return a torch.nn.Module"]),
        (
            ["simulate", "--dataset", "mine:big_mismatch"],
            ["dataset = 'mine:big_mismatch' returned data", "(3000, 64) and (2999,)"],
        ),
        (["node", "-n", "x", "--model", "nomod_x:f"], ["cannot import 'nomod_x'"]),
        (
            ["node", "-n", "x", "--model", "mine:raises"],
            ["--model 'mine:raises' raised ValueError: disk on fire at "],
        ),
        (
            ["node", "-n", "x", "--model", "mine:returns_int"],
            ["--model 'mine:returns_int' returned 42; return a torch.nn.Module"],
        ),
    ],
)
def test_a_broken_own_function_is_one_line_without_traceback_or_data(
    args: list[str], fragments: list[str], tmp_path: Path
) -> None:
    (tmp_path / "mine.py").write_text(USER_MODULE, encoding="utf-8")
    if args[0] == "node":
        extra = ["--discovery", "off", "--no-serve"]
    else:
        extra = ["--nodes", "2", "--epochs", "1", "--out", "run"]

    done = run_cli_process([*args, *extra], tmp_path)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert len(lines[0]) < 400 and "0. 0. 0." not in lines[0]  # described, never dumped
    assert not (tmp_path / "run").exists()


def test_a_node_whose_data_function_returns_no_loader_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        USER_MODULE + "\nfrom torch import nn\n\ndef model():\n    return nn.Linear(64, 10)\n",
        encoding="utf-8",
    )

    done = run_cli_process(
        [
            "node",
            "-n",
            "x",
            "--model",
            "mine:model",
            "--data",
            "mine:returns_int",
            "--discovery",
            "off",
            "--no-serve",
        ],
        tmp_path,
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --data 'mine:returns_int' returned 42; return (trainloader, validloader) or a "
        "trainloader (iterables of (inputs, labels) batches, e.g. torch DataLoaders)"
    ]
