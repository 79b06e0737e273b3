"""``--tensorboard [DIR]`` and ``--mlflow [URI]``: the metrics-export flags of ``simulate``,
``demo`` and ``node``.

Given without a value, ``--tensorboard`` writes to ``<run folder>/tensorboard`` and
``--mlflow`` to a local MLflow file store ``<run folder>/mlruns``; for ``node``, to
``runs/tensorboard`` and ``runs/mlruns`` in the working folder (shared by the nodes started
there). A value that is an existing file is refused: it is almost always a config file that
the optional value swallowed (write ``--tensorboard=DIR`` or put the flag last).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigurationError
from ..export.base import MetricsLogger

__all__ = [
    "export_lines",
    "export_options",
    "make_loggers",
    "node_export_options",
    "pop_export_flags",
]


def _options(folder: str) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    return [
        click.option(
            "--tensorboard",
            is_flag=False,
            flag_value="",
            default=None,
            metavar="[DIR]",
            help=f"Export metrics as TensorBoard event files to DIR (default: "
            f"{folder}/tensorboard).",
        ),
        click.option(
            "--mlflow",
            is_flag=False,
            flag_value="",
            default=None,
            metavar="[URI]",
            help=f"Log metrics to MLflow at URI or folder (default: a file store {folder}/mlruns).",
        ),
    ]


def export_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--tensorboard [DIR]`` and ``--mlflow [URI]`` to a click command (by default
    into the run folder)."""
    for option in reversed(_options("<run folder>")):
        func = option(func)
    return func


def node_export_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--tensorboard [DIR]`` and ``--mlflow [URI]`` to ``node`` (by default into
    ``runs/`` of the working folder)."""
    for option in reversed(_options("runs")):
        func = option(func)
    return func


def pop_export_flags(options: dict[str, Any]) -> tuple[str | None, str | None]:
    """Remove and return the values of ``--tensorboard`` and ``--mlflow`` (``None``: not
    given, ``""``: given without a value)."""
    return options.pop("tensorboard", None), options.pop("mlflow", None)


def _not_a_file(flag: str, value: str) -> None:
    if value and Path(value).is_file():
        raise ConfigurationError(
            f"{flag} expects a folder or URI, got the file {value!r} (a config file taken as "
            f"its value?); write {flag}=DIR, or put {flag} after the config file"
        )


def make_loggers(
    tensorboard: str | None,
    mlflow: str | None,
    out: Path,
    *,
    run_name: str | None,
    experiment: str = "scatterbrained",
    params: Mapping[str, Any] | None = None,
) -> list[MetricsLogger]:
    """The loggers the flags ask for (none when neither was given).

    Args:
        tensorboard: ``--tensorboard``'s value (``""``: ``out/tensorboard``).
        mlflow: ``--mlflow``'s value (``""``: a file store ``out/mlruns``).
        out: the run folder the defaults go into.
        run_name: the MLflow run name (``None``: a single node's id, else MLflow's choice).
        experiment: the MLflow experiment.
        params: MLflow run parameters (e.g. the config).

    Raises:
        ConfigurationError: a value is an existing file, or tensorboardX / mlflow is not
            installed (the message says how to install it).
    """
    from ..export.mlflow_logger import MLflowLogger
    from ..export.tensorboard_logger import TensorBoardLogger

    loggers: list[MetricsLogger] = []
    if tensorboard is not None:
        _not_a_file("--tensorboard", tensorboard)
        loggers.append(TensorBoardLogger(tensorboard or out / "tensorboard"))
    if mlflow is not None:
        _not_a_file("--mlflow", mlflow)
        loggers.append(
            MLflowLogger(
                mlflow or out / "mlruns", experiment=experiment, run_name=run_name, params=params
            )
        )
    return loggers


def export_lines(loggers: list[MetricsLogger]) -> list[str]:
    """One line per logger saying where its metrics went and how to look at them."""
    from ..export.mlflow_logger import MLflowLogger
    from ..export.tensorboard_logger import TensorBoardLogger

    lines = []
    for target in loggers:
        if isinstance(target, TensorBoardLogger):
            lines.append(
                f"tensorboard: {target.logdir} (view: tensorboard --logdir {target.logdir})"
            )
        elif isinstance(target, MLflowLogger):
            note = (
                " (MLflow 3 reads a file store with MLFLOW_ALLOW_FILE_STORE=true)"
                if target.tracking_uri.startswith("file:")
                else ""
            )
            lines.append(
                f"mlflow: {target.tracking_uri}, experiment {target.experiment!r}, "
                f"run {target.run_id}{note}"
            )
    return lines
