"""The process backend's file protocol: rows read while workers append, written atomically."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from scatterbrained.sim.processes import read_metric_rows
from scatterbrained.sim.worker import _append, _write_atomically

pytestmark = pytest.mark.timeout(30)


def row(epoch: int) -> dict[str, object]:
    return {"node": "n000", "epoch": epoch, "accuracy": 0.5, "merged_from": ["n001", "n002"]}


def test_missing_file_has_no_rows(tmp_path: Path) -> None:
    assert read_metric_rows(tmp_path / "absent.jsonl") == []


def test_a_half_written_last_line_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "n000.jsonl"
    whole = json.dumps(row(1)) + "\n"
    path.write_text(whole + json.dumps(row(2))[:40], encoding="utf-8")

    rows = read_metric_rows(path)

    assert [r["epoch"] for r in rows] == [1]


def test_a_broken_line_is_skipped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "n000.jsonl"
    cut = json.dumps(row(2))[:30]
    path.write_text(f"{json.dumps(row(1))}\n{cut}\n{json.dumps(row(3))}\n", encoding="utf-8")

    rows = read_metric_rows(path)

    assert [r["epoch"] for r in rows] == [1, 3]
    assert "does not parse" in caplog.text


def test_append_closes_off_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "n000.jsonl"
    path.write_text(json.dumps(row(1)) + "\n" + json.dumps(row(2))[:25], encoding="utf-8")

    _append(path, row(3))

    assert [r["epoch"] for r in read_metric_rows(path)] == [1, 3]


def test_rows_read_during_concurrent_appends_are_always_whole(tmp_path: Path) -> None:
    path = tmp_path / "n000.jsonl"
    done = threading.Event()

    def writer() -> None:
        for epoch in range(1, 301):
            _append(path, row(epoch))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        epochs = [r["epoch"] for r in read_metric_rows(path)]
        assert epochs == list(range(1, len(epochs) + 1))
    thread.join(timeout=10)

    assert len(read_metric_rows(path)) == 300


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "n000.final.json"
    path.write_text('{"accuracy": 0.1}', encoding="utf-8")

    _write_atomically(path, json.dumps({"accuracy": 0.9}))

    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.9}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n000.final.json"]
