"""``python -m cosim``: the same CLI as the ``cosim`` command."""

from cosim.cli.app import app

app(prog_name="cosim")
