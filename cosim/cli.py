"""The ``cosim`` command line (typer): each capability registers its sub-commands here."""

from __future__ import annotations

import typer

from cosim import (
    cli_config,
    cli_dataset,
    cli_robustness,
    cli_run,
    cli_scenarios,
    cli_sweep,
    cli_train,
)
from cosim.cli_errors import ErrorReportingTyper, set_debug

app = ErrorReportingTyper(
    no_args_is_help=True, help="Cooperative V2X LiDAR perception co-simulation."
)
cli_run.register(app)
cli_sweep.register(app)
cli_robustness.register(app)
app.command("train")(cli_train.train_command)
app.command("eval")(cli_train.eval_command)
app.add_typer(cli_scenarios.app, name="scenarios")
app.add_typer(cli_dataset.app, name="dataset")
app.add_typer(cli_config.app, name="config")


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", help="show the traceback of an error instead of one error: line"),
) -> None:
    """v2x-cosim: simulate, train and evaluate cooperative LiDAR perception."""
    set_debug(debug)


if __name__ == "__main__":
    app()
