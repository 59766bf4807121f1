"""Write a checkpoint whose weights are BASE's, except those under PREFIX, which come from DONOR.

For two files that share every other weight bit for bit: ``diffkd.pt`` is ``agf.pt`` (frozen)
plus a refiner, so a new AGF trust trained on the same frozen ``agf.pt`` (``train_only:
[fusion.reliability.]``) can be carried into ``diffkd.pt`` without retraining the refiner.
The weights outside PREFIX must be equal in BASE and DONOR (checked), so the graft is exactly
the detector that DONOR's training would have given BASE's refiner. The result's ``extra``
keeps BASE's (its training config and teacher) and records the graft.

    python scripts/graft_checkpoint.py models/checkpoints/diffkd.pt runs/trust_wide/agf/best.pt \
        runs/trust_wide/diffkd_graft.pt --prefix fusion.reliability --as-model cpu_diffkd_trust_wide
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from models.checkpoint import load_checkpoint, save_checkpoint
from models.detector import build_detector
from models.distill import file_sha256

console = Console()


def main(
    base: Annotated[Path, typer.Argument(help="Checkpoint that gives every weight but PREFIX.")],
    donor: Annotated[Path, typer.Argument(help="Checkpoint that gives the weights under PREFIX.")],
    out: Annotated[Path, typer.Argument(help="Checkpoint to write.")],
    prefix: Annotated[list[str], typer.Option(help="Parameter-name prefix taken from DONOR.")],
    as_model: Annotated[str, typer.Option(help="Detector preset of the result.")],
) -> None:
    """Graft DONOR's PREFIX weights onto BASE under preset AS_MODEL; refuse when the two
    files differ anywhere else."""
    base_model, _, payload = load_checkpoint(base)
    donor_model, _, _ = load_checkpoint(donor)
    taken = tuple(prefix)
    base_state = {k: v for k, v in base_model.state_dict().items() if not k.startswith(taken)}
    donor_state = donor_model.state_dict()
    for name, value in base_state.items():
        if name in donor_state and not torch.equal(donor_state[name], value):
            raise typer.BadParameter(f"{donor} differs from {base} at {name}, outside {taken}")
    grafted = {k: v for k, v in donor_state.items() if k.startswith(taken)}
    if not grafted:
        raise typer.BadParameter(f"{donor} has no parameter under {taken}")
    model = build_detector(as_model)
    try:
        model.load_state_dict({**base_state, **grafted}, strict=True)
    except RuntimeError as err:
        raise typer.BadParameter(f"{as_model} does not take the grafted weights: {err}") from err
    extra = dict(payload["extra"])
    extra["graft"] = {
        "base": str(base),
        "base_sha256": file_sha256(base),
        "donor": str(donor),
        "donor_sha256": file_sha256(donor),
        "prefix": list(taken),
        "parameters": sorted(grafted),
        "command": shlex.join(["python", *sys.argv]),
    }
    save_checkpoint(
        out, model.eval(), model.config, payload["metrics"], None, payload["epoch"], extra
    )
    console.print(f"wrote {out}: {len(grafted)} tensors from {donor}, the rest from {base}")


if __name__ == "__main__":
    typer.run(main)
