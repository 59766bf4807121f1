"""A committed ``scripts/*.py`` typer script's ``main`` as an app that ``CliRunner`` invokes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def script_app(name: str) -> typer.Typer:
    """``scripts/<name>.py`` loaded as a module, its ``main`` the app's one command."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = typer.Typer()
    app.command()(module.main)
    return app
