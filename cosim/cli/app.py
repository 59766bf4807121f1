"""The ``cosim`` command line (typer): each capability registers its sub-commands here."""

from __future__ import annotations

import typer

from cosim.cli import config, dataset, robustness, run, scenarios, sweep, train
from cosim.cli.errors import ErrorReportingTyper, set_debug

app = ErrorReportingTyper(
    no_args_is_help=True, help="Cooperative V2X LiDAR perception co-simulation."
)
# Every command module registers itself the same way: ``register(app)``.
for command_module in (run, sweep, robustness, train, scenarios, dataset, config):
    command_module.register(app)


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", help="show the traceback of an error instead of one error: line"
    ),
) -> None:
    """v2x-cosim: simulate, train and evaluate cooperative LiDAR perception."""
    set_debug(debug)
