"""`simulate --set KEY=VALUE`, `--list-keys`, ./scatterbrained.toml, and `new`'s refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scatterbrained.cli.main import main
from scatterbrained.cli.new import PROJECT_FILES
from scatterbrained.cli.simulate import _apply_overrides, parse_settings
from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.config import FaultEvent, SimConfig, config_keys

pytestmark = pytest.mark.timeout(60)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("lr=0.01", {"lr": 0.01}),
        ("batch-size=16", {"batch_size": 16}),
        ("sync=false", {"sync": False}),
        ("dataset=digits", {"dataset": "digits"}),  # a bare word is a string
        ("model=mymodel:make_model", {"model": "mymodel:make_model"}),
        ('out="runs/x"', {"out": "runs/x"}),
        ("train_limit=none", {"train_limit": None}),
        ('modes={"1" = "seeding"}', {"modes": {"1": "seeding"}}),
        (
            'faults=[{epoch = 1, node = 2, action = "kill"}]',
            {"faults": [{"epoch": 1, "node": 2, "action": "kill"}]},
        ),
    ],
)
def test_settings_are_toml_values(item: str, expected: dict[str, Any]) -> None:
    assert parse_settings([item]) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lrr=0.1", "--set 'lrr=0.1': unknown config key 'lrr'; did you mean 'lr'?"),
        ("lr", "--set 'lr': expected KEY=VALUE"),
        ("=3", "--set '=3': expected KEY=VALUE"),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(item: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_settings([item])

    assert str(caught.value).startswith(message)


def test_settings_go_after_flags_and_keep_their_own_faults() -> None:
    config = SimConfig(nodes=8, epochs=10, faults=(FaultEvent(5, 6, "kill"),))
    faults = [{"epoch": 1, "node": 2, "action": "kill"}]

    changed = _apply_overrides(
        config, {"nodes": 4, "epochs": None}, {"lr": 0.05, "faults": faults, "epochs": 3}
    )

    assert (changed.nodes, changed.epochs, changed.lr) == (4, 3, 0.05)
    assert changed.faults == (FaultEvent(1, 2, "kill"),)


def test_a_setting_of_the_wrong_type_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_main(["simulate", "--set", "lr=fast", "--out", str(tmp_path)], capsys)

    assert code == 2
    assert err.strip().splitlines() == [
        "error: lr = 'fast' has the wrong type; expected int or float"
    ]


def test_list_keys_lists_every_key_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["simulate", "--list-keys"], capsys)

    assert code == 0
    for name, default, _ in config_keys():
        assert f"  {name} = {default}" in out
    assert "lr = 0.003" in out and "Adam learning rate" in out


def test_simulate_reads_scatterbrained_toml_of_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "scatterbrained.toml").write_text("nodes = 3\nlrr = 1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    code, out, err = run_main(["simulate"], capsys)

    assert code == 2  # the file was read: its typo is reported
    assert "config: scatterbrained.toml" in out
    assert "unknown config key 'lrr'; did you mean 'lr'?" in err


def test_new_refuses_a_folder_that_is_not_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "empty").mkdir()

    code, _, err = run_main(["new", str(tmp_path / "taken")], capsys)
    made, out, _ = run_main(["new", str(tmp_path / "empty")], capsys)

    assert code == 2
    assert err.strip() == (
        f"error: {tmp_path / 'taken'} already exists and is not empty; nothing was written. "
        "Choose another name, or remove the folder first"
    )
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    assert made == 0 and "scatterbrained simulate" in out
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == sorted(PROJECT_FILES)


def test_the_new_projects_config_is_valid(tmp_path: Path) -> None:
    from scatterbrained.cli.new import write_project
    from scatterbrained.sim.config import load_config

    write_project(tmp_path / "p")

    config = load_config(tmp_path / "p" / "scatterbrained.toml")
    assert (config.model, config.dataset, config.nodes) == ("model:make_model", "data:load", 4)
