"""``cosim config ...``: print a config kind's JSON schema, check any config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cosim.cli.config_kinds import KINDS, check, schema
from cosim.cli.errors import print_error

app = typer.Typer(no_args_is_help=True, help="Config files: JSON schemas and validation.")
console = Console(highlight=False)
KIND_HELP = "One of: " + ", ".join(f"{name} ({kind.about})" for name, kind in KINDS.items())


@app.command("schema")
def schema_command(
    kind: Annotated[str, typer.Argument(help=KIND_HELP)],
) -> None:
    """Print the JSON schema of a config kind (keys, types, ranges, allowed values)."""
    try:
        text = json.dumps(schema(kind), indent=2)
    except ValueError as err:
        print_error(console, err)
        raise typer.Exit(2) from None
    typer.echo(text)


@app.command("check")
def check_command(
    files: Annotated[list[Path], typer.Argument(help="Config YAML file(s) to validate.")],
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Validate as this kind instead of guessing it. " + KIND_HELP),
    ] = None,
) -> None:
    """Validate config files; print each one's kind and "ok", or the error (file, key path,
    what is allowed) and exit 2."""
    failed = False
    for path in files:
        try:
            found = check(path, kind)
        except (ValueError, OSError) as err:
            print_error(console, err)
            failed = True
            continue
        console.print(f"{path}: {found} ok", soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def register(root: typer.Typer) -> None:
    """Add the ``config`` command group to the ``cosim`` app."""
    root.add_typer(app, name="config")
