"""What each received neighbour adds to the ego's detection, by the loss and by the frame's AP.

Takes every 4th of the first 60 ``data/robust`` samples (seed 0), clean and with fog /
crosstalk / beam loss at severity 2 on the neighbours only, and for every chosen neighbour
measures :func:`models.harm.neighbour_gains` (trust neutral: the model's attention and gate,
nothing dropped): the fall of the detection loss and the rise of the frame's AP@0.5 when it
is fused beside the others rather than left out. Prints their mean / median and how often the
AP gain is positive or negative per condition, as JSON (docs/results.md, "A trust that
reads harm"):

    python scripts/neighbour_harm.py models/checkpoints/base/agf_gen5.pt
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
from models.harm import neighbour_gains

CONDITIONS = ("none", "fog", "crosstalk", "beam_missing")


def main(
    checkpoint: Annotated[Path, typer.Argument(help="A feature-fusion checkpoint.")],
    data: Annotated[Path, typer.Option(help="Robustness split.")] = Path("data/robust"),
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    torch.set_num_threads(threads)
    model, _, _ = load_checkpoint(checkpoint)
    model.eval()
    if not model.config.is_feature_fusion:
        raise typer.BadParameter(f"{checkpoint}: fusion {model.config.fusion!r} fuses no maps")
    store = FrameStore(data)
    out: dict[str, object] = {}
    for name in CONDITIONS:
        cond = Condition("clean", "none", 0.0) if name == "none" else Condition("sensor", name, 2)
        runs = condition_samples(store, model.grid, cond, frames=15, seed=0, target="neighbours")
        loss: list[float] = []
        ap: list[float] = []
        for sample in itertools.islice(runs, 0, 60, 4):
            with torch.no_grad():
                passed = model.forward_pass([sample], refine_steps=0)
                fused = passed.fused
                count = len(fused.chosen[0])
                if count == 0 or fused.inputs is None or len(sample.gt_boxes) == 0:
                    continue
                row = tuple(x[0] for x in fused.inputs)
                gains = neighbour_gains(
                    model, passed.ego_maps[0], row, count, sample, with_loss=True
                )
            assert gains.loss is not None
            loss += gains.loss.tolist()
            ap += gains.ap.tolist()
        a, lo = np.asarray(ap), np.asarray(loss)
        out[name] = {
            "neighbours": len(a),
            "loss_gain_mean": float(lo.mean()),
            "loss_gain_median": float(np.median(lo)),
            "ap_gain_mean": float(a.mean()),
            "ap_gain_median": float(np.median(a)),
            "ap_helps": float((a > 0).mean()),
            "ap_hurts": float((a < 0).mean()),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    typer.run(main)
