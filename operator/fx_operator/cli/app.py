"""The ``fxctl`` command group; commands live in one module per group, loaded when they run."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from fx_operator import __version__
from fx_operator.exceptions import EXIT_FAILURE, FxError

# Modules of the ``operator`` extra: a plain ``pip install`` lacks them.
OPERATOR_EXTRA = frozenset({"kopf", "kubernetes", "aiohttp", "prometheus_client"})
EXTRA_HINT = "pip install 'fx-executor[operator]'"
VERSION_MESSAGE = "%(prog)s, version %(version)s"  # click's own wording


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs.

    ``fxctl run`` should not pay for the cluster client, nor ``fxctl --version`` for anything
    (click's documented pattern for lazy subcommands).
    """

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             lazy={"secrets": "fx_operator.cli.secrets:secrets",
                   "db": "fx_operator.cli.db:db",
                   "run": "fx_operator.cli.run:run",
                   "results": "fx_operator.cli.run:results",
                   "seal": "fx_operator.cli.cluster:seal",
                   "operator": "fx_operator.cli.cluster:operator",
                   "completion": "fx_operator.cli.completion:completion",
                   "gc": "fx_operator.cli.gc:gc",
                   "schedule": "fx_operator.cli.schedule:schedule",
                   "explain": "fx_operator.cli.explain:explain_command",
                   "audit": "fx_operator.cli.audit:audit"})
@click.version_option(__version__, prog_name="fxctl", message=VERSION_MESSAGE)
def cli() -> None:
    """Run packages of Python scripts and hand them secrets safely.

    Settings come from the environment: FX_DATABASE_URL (PostgreSQL; unset: the embedded store
    under FX_HOME), FX_MASTER_KEY_FILE, FX_HOME.
    """


def _missing_extra(error: ModuleNotFoundError) -> str | None:
    top = (error.name or "").partition(".")[0]
    if top not in OPERATOR_EXTRA:
        return None
    return f"this command needs the operator extra ({top} is not installed): {EXTRA_HINT}"


def run(argv: list[str] | None = None) -> None:
    """Run fxctl; our errors print as one clear message (never a value) and a non-zero exit."""
    try:
        code = cli.main(args=argv, prog_name="fxctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except FxError as e:  # the class says the exit code (FxError.exit_code)
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        hint = _missing_extra(e)
        if hint is None:
            raise
        click.echo(f"error: {hint}", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as e:  # a file named on the command line cannot be read or written
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(EXIT_FAILURE)
    if isinstance(code, int) and code:
        sys.exit(code)
