"""Write a copy of a PKD checkpoint whose noise adapter is replaced by one fixed ``gamma``.

The noise-adapter ablation at inference: the same denoiser and autoencoder, every map started
at ``gamma * student + (1 - gamma) * noise`` with one ``gamma`` for all (pass the mean
``refine_gamma`` that ``cosim robustness`` reported for the checkpoint, so only the per-map
adaptation is removed). Run ``cosim robustness`` on both files::

    python scripts/fixed_gamma_checkpoint.py models/checkpoints/diffkd.pt \
        runs/diffkd_fixed_gamma.pt --gamma 0.8
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from models.detector import CooperativeDetector


def main(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint with a PKD refiner.")],
    out: Annotated[Path, typer.Argument(help="Where to write the fixed-gamma copy.")],
    gamma: Annotated[float, typer.Option(min=0.0, max=1.0, help="The fixed start mix.")],
) -> None:
    """Copy CHECKPOINT to OUT with ``noise_adapter: false`` and ``fixed_gamma: GAMMA``."""
    model, config, metrics = load_checkpoint(checkpoint)
    if config.refiner is None:
        raise typer.BadParameter(f"{checkpoint}: the model has no refiner", param_hint="checkpoint")
    refiner = dataclasses.replace(config.refiner, noise_adapter=False, fixed_gamma=gamma)
    fixed_config = dataclasses.replace(config, refiner=refiner)
    fixed = CooperativeDetector(fixed_config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("refiner.adapter.")}
    fixed.load_state_dict(state, strict=True)
    extra = dict(read_checkpoint(checkpoint).get("extra") or {})
    extra["derived_from"] = f"{checkpoint} with its noise adapter fixed at gamma {gamma}"
    save_checkpoint(out, fixed, fixed_config, metrics, extra=extra)
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
