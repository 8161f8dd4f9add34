"""Shell completion: ``fxctl completion bash|zsh|fish`` and the names completed from the store.

Click does the shell side (its ``_FXCTL_COMPLETE`` protocol); this module only says what the
candidates are. Completion must never create a store, prompt, print an error or show a value:
anything that goes wrong completes nothing.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class

from fx_operator.config import Settings
from fx_operator.storage.secret_store import ListedSecret

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_FXCTL_COMPLETE"


def _stored(project: str | None) -> list[ListedSecret]:
    """The current secrets (metadata only), or nothing when there is no store to ask."""
    from fx_operator.services.configured_store import open_secret_service

    try:
        settings = Settings()
        if settings.embedded and not settings.embedded_path.exists():
            return []
        service = open_secret_service(settings, migrate=False)
    except Exception:  # a completion that fails completes nothing
        return []
    try:
        return service.list(project=project)
    except Exception:
        return []
    finally:
        service.close()


def _items(candidates: set[str | None], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(c) for c in sorted(c for c in candidates if c)
            if c.startswith(incomplete)]


def complete_secret_names(ctx: click.Context, _param: click.Parameter,
                          incomplete: str) -> list[CompletionItem]:
    return _items({r.name for r in _stored(ctx.params.get("project"))}, incomplete)


def complete_packages(ctx: click.Context, _param: click.Parameter,
                      incomplete: str) -> list[CompletionItem]:
    return _items({r.owner.package for r in _stored(ctx.params.get("project"))}, incomplete)


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL; e.g. `source <(fxctl completion bash)`."""
    from fx_operator.cli.main import cli

    shell_class = get_completion_class(shell)
    if shell_class is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(shell_class(cli, {}, "fxctl", COMPLETE_VAR).source())
