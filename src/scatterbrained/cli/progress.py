"""Live progress and the final summary table of a simulation, rendered with rich.

On a terminal: a progress bar and one timestamped line per epoch, wrapped at the terminal's
width. Off a terminal (piped to a file or ``| cat``): no progress bar and no colours; every
line is printed whole, ``HH:MM:SS message``, never wrapped, so ``grep`` and log files see one
line per message. Neither shows the source file of the line.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..sim.config import SimConfig
from ..sim.runner import RunResult

__all__ = ["LiveProgress", "fmt_bytes", "make_console", "print_summary"]


def fmt_bytes(count: float) -> str:
    """Format a byte count with SI units (1 kB = 1000 B, 1 MB = 10**6 B), like the README."""
    for unit in ("B", "kB", "MB", "GB"):
        shown = f"{count:.0f}" if unit == "B" else f"{count:.1f}"
        if float(shown) < 1000 or unit == "GB":  # 999.96 kB is shown as 1.0 MB
            return f"{shown} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover


def make_console() -> Console:
    """A console for the CLI's output on stdout: no source locations on log lines, and off a
    terminal no wrapping (``soft_wrap``): a long line stays one line."""
    console = Console(log_path=False)
    console.soft_wrap = not console.is_terminal
    return console


def _fmt_acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class LiveProgress:
    """A progress bar over epochs plus one printed line per epoch.

    The bar is drawn only on a terminal; off a terminal each line is printed whole (see the
    module docstring).
    """

    def __init__(self, config: SimConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or make_console()
        self._live = self.console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self._task = self._progress.add_task("epochs", total=config.epochs, info="")

    def __enter__(self) -> LiveProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live:
            self._progress.stop()

    def _line(self, markup: str) -> None:
        if self._live:
            self.console.log(markup)
        else:  # one whole line with its time, colours dropped, no wrapping
            line = Text(time.strftime("%H:%M:%S ")) + Text.from_markup(markup)
            self.console.print(line, soft_wrap=True, highlight=False)

    def status(self, message: str) -> None:
        """Show a status line (loading data, baselines, plots)."""
        self._progress.update(self._task, info=escape(message))
        self._line(escape(message))  # plain text, not rich markup

    def epoch(self, epoch: int, rows: list[dict[str, Any]]) -> None:
        """Report one finished epoch."""
        accuracies = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        mean = sum(accuracies) / len(accuracies) if accuracies else None
        alive = sum(1 for r in rows if r.get("alive"))
        peers = [r.get("peers") or 0 for r in rows if r.get("alive")]
        mean_peers = sum(peers) / len(peers) if peers else 0.0
        sent = sum(r.get("bytes_sent") or 0 for r in rows)
        events = ", ".join(f"{r['node']} {r['event']}" for r in rows if r.get("event"))
        line = (
            f"epoch {epoch:>3}/{self.config.epochs}  mean acc {_fmt_acc(mean)}  "
            f"alive {alive}/{len(rows)}  peers {mean_peers:.1f}  sent {fmt_bytes(sent)}"
        )
        if events:
            line += f"  [yellow]{events}[/]"
        self._line(line)
        self._progress.update(self._task, completed=epoch, info=f"acc {_fmt_acc(mean)}")


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the summary table, the baseline and where the files are."""
    out = console or make_console()
    summary = result.summary
    table = Table(title="Summary", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("nodes (finished)", f"{summary['nodes']} ({summary['nodes_finished']})"),
        ("epochs", str(summary["epochs"])),
        ("dataset", str(summary["dataset"])),
        ("topology", str(summary["topology"])),
        ("mean accuracy", _fmt_acc(summary["mean_accuracy"])),
        (
            "min / max accuracy",
            f"{_fmt_acc(summary['min_accuracy'])} / {_fmt_acc(summary['max_accuracy'])}",
        ),
        ("centralized baseline", _fmt_acc(summary.get("centralized_accuracy"))),
        ("bytes sent (all nodes)", fmt_bytes(summary["bytes_total"])),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ]
    if "local_only_mean_accuracy" in summary:
        rows.append(("local-only mean accuracy", _fmt_acc(summary["local_only_mean_accuracy"])))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    if summary.get("events"):
        churn = ", ".join(
            # an event's epoch is the first epoch it affects: it happened before that epoch
            f"{e['node']} {e['event']} before epoch {e['epoch']}"
            for e in summary["events"]
        )
        out.print(f"churn: {churn}")
    out.print(f"run folder: {result.out}")
    for plot in result.plots:
        out.print(f"plot: {plot}")
