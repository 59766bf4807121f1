"""What AGF's per-neighbour reliability score says about clean and corrupted neighbours.

Scores every chosen neighbour of every 6th of the first 60 ``data/robust`` samples (seed 0),
clean and with fog / crosstalk / beam loss at severity 2 on the neighbours only, and prints the
score's mean / min / max logit and mean sigmoid (the trust a shut-out AGF scales the
neighbours' share by) per condition, and for an older score the learnt factor that carries it
into the gate, as JSON (docs/results.md, "Fifth generation"):

    python scripts/reliability_scores.py models/checkpoints/agf.pt
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from cosim.experiments.conditions import Condition
from cosim.experiments.robustness import condition_samples
from models.checkpoint import load_checkpoint
from models.dataset import FrameStore


def main(
    checkpoint: Annotated[Path, typer.Argument(help="An AGF checkpoint with a reliability score.")],
    data: Annotated[Path, typer.Option(help="Robustness split.")] = Path("data/robust"),
) -> None:
    torch.set_num_threads(1)
    model, _, _ = load_checkpoint(checkpoint)
    model.eval()
    if getattr(model.fusion, "reliability", None) is None:
        raise typer.BadParameter(f"{checkpoint}: its fusion has no reliability score")
    store = FrameStore(data)
    # A shut-out score scales the neighbours' share by its sigmoid (the trust); an older score
    # enters the gate's logit times a learnt factor instead.
    shut_out = bool(model.fusion.options.shut_out)
    out: dict[str, object] = {"shut_out": shut_out}
    if not shut_out:
        out["gate_factor"] = float(model.fusion.reliability_gate.detach())
    for name in ("none", "fog", "crosstalk", "beam_missing"):
        cond = Condition("clean", "none", 0.0) if name == "none" else Condition("sensor", name, 2)
        runs = condition_samples(store, model.grid, cond, frames=15, seed=0, target="neighbours")
        samples = list(itertools.islice(runs, 0, 60, 6))
        with torch.no_grad():
            fused = model.forward_pass(samples, refine_steps=0).fused
        assert fused.reliability is not None
        values = [
            float(fused.reliability[j, i])
            for j, c in enumerate(fused.chosen)
            for i in range(len(c))
        ]
        out[name] = {
            "mean": float(np.mean(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
            "mean_trust": float(np.mean(1.0 / (1.0 + np.exp(-np.asarray(values))))),
            "neighbours": len(values),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    typer.run(main)
