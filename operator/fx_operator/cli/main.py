"""Entry point of ``fxctl``; commands live in one module per group."""

from __future__ import annotations

import sys

import click

from fx_operator.cli.cluster import operator, seal
from fx_operator.cli.db import db
from fx_operator.cli.gc import gc
from fx_operator.cli.run import results, run
from fx_operator.cli.secrets import secrets
from fx_operator.exceptions import FxError, ValidationError

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fx-executor", prog_name="fxctl")
def cli() -> None:
    """Run packages of Python scripts and hand them secrets safely.

    Settings come from the environment: FX_DATABASE_URL (PostgreSQL; unset: the embedded store
    under FX_HOME), FX_MASTER_KEY_FILE, FX_HOME.
    """


cli.add_command(secrets)
cli.add_command(db)
cli.add_command(run)
cli.add_command(results)
cli.add_command(seal)
cli.add_command(operator)
cli.add_command(gc)


def main(argv: list[str] | None = None) -> None:
    """Run fxctl; our errors print as one clear message (never a value) and a non-zero exit."""
    try:
        code = cli.main(args=argv, prog_name="fxctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ValidationError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except FxError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as e:  # a file named on the command line cannot be read or written
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(EXIT_FAILURE)
    if isinstance(code, int) and code:
        sys.exit(code)
