"""The ``scatterbrained`` command line.

Only the CLI configures logging and prints; library code never does. Every expected failure
(a bad config, a missing dataset, ...) ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from ..errors import ScatterbrainedError
from .commands import keys, node, peers
from .dashboard import dashboard
from .new import new
from .simulate import demo, simulate

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scatterbrained")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Decentralized federated learning over ZeroMQ.

    Start with `scatterbrained demo`; see `scatterbrained COMMAND --help` for each command.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(demo)
cli.add_command(simulate)
cli.add_command(node)
cli.add_command(peers)
cli.add_command(keys)
cli.add_command(new)
cli.add_command(dashboard)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 interrupted, 2 usage or config error)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return 2
    except ScatterbrainedError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
