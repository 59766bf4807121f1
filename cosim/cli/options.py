"""Options several commands share (`run`, `eval`, `robustness`), declared once so that their
flags, ranges and help agree."""

from __future__ import annotations

from typing import Annotated

import typer

from models.refiner import MAX_STEPS

RefineSteps = Annotated[
    int | None,
    typer.Option(
        min=0, max=MAX_STEPS, help="PKD refiner DDIM steps, 0 = off [default: the checkpoint's]."
    ),
]
RefineSkipAbove = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Adaptive steps: skip refining maps the noise adapter rates >= this "
        "(1 = never skip) [default: the checkpoint's].",
    ),
]
RefineNeighbours = Annotated[
    bool | None,
    typer.Option(
        "--refine-neighbours/--no-refine-neighbours",
        help="Also refine every received map before fusing it [default: no].",
    ),
]
