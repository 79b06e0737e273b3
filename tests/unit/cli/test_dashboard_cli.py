"""``scatterbrained dashboard`` and ``--dashboard``: help, and the errors before anything runs."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from scatterbrained.cli.main import main

pytestmark = pytest.mark.timeout(60)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ([], ["dashboard"]),
        (["dashboard"], ["PATH", "--port", "runs/", "Ctrl-C"]),
        (["demo"], ["--dashboard", "--dashboard-port"]),
        (["simulate"], ["--dashboard", "--dashboard-port"]),
        (["node"], ["--dashboard", "--dashboard-port"]),
    ],
)
def test_help_mentions_the_dashboard(
    argv: list[str], mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main([*argv, "--help"], capsys)

    assert code == 0, err
    for text in mentions:
        assert text in out


def test_dashboard_of_a_folder_without_runs_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(["dashboard", str(tmp_path)], capsys)

    assert code == 2
    assert err.startswith(f"error: {tmp_path} holds no run")


def test_without_aiohttp_the_error_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # import aiohttp raises ImportError

    code, _, err = run_main(["dashboard", str(tmp_path)], capsys)

    assert code == 2
    assert "needs aiohttp" in err
    assert "pip install 'scatterbrained[dashboard]'" in err


def test_a_taken_dashboard_port_fails_before_the_run_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["simulate", "--nodes", "2", "--epochs", "1", "--out", str(tmp_path / "run")]
        code, _, err = run_main([*argv, "--dashboard", "--dashboard-port", str(port)], capsys)

    assert code == 2
    assert f"cannot serve the dashboard on 127.0.0.1:{port} (in use)" in err
    assert not (tmp_path / "run").exists()
