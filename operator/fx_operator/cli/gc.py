"""``fxctl gc``: remove what local runs killed outright left behind."""

from __future__ import annotations

import click

from fx_operator.services.run_dirs import sweep


def sweep_leftovers() -> None:
    """Remove the folders of local runs whose fxctl has ended (their secrets among them), saying
    which; ``fxctl run`` does this before every local run."""
    for path in sweep():
        click.echo(f"fxctl: removed {path}, left by a run whose fxctl was killed", err=True)


@click.command("gc")
def gc() -> None:
    """Remove the folders of local runs that were killed before they could clean up.

    A local run writes its secrets to a private tmpfs folder and removes it when it ends; a run
    killed outright (kill -9) cannot. Each folder is named after the fxctl process that made it:
    this removes the ones, owned by you, whose fxctl no longer runs. ``fxctl run`` does the same
    before every local run.
    """
    sweep_leftovers()
