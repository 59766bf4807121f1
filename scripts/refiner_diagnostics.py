"""How far a PKD checkpoint's refiner moves the ego map, and toward what.

For each corruption severity, draws Diff-KD pairs from a dataset (ego corrupted, ``--target
ego``) and prints JSON per severity: the map distances (mean squared error per cell) of the
raw student map and of the refined one to the teacher's map of the clean sample (what
``distill.teacher_input`` says it sees: every agent, or the ego alone) and to the student
encoder's own map of the *clean* ego points, the relative size of the refiner's change,
and the noise adapter's gamma. A refiner that repairs moves the map toward the clean one
(``refined_to_clean`` < ``student_to_clean``)::

    python scripts/refiner_diagnostics.py models/checkpoints/diffkd.pt \
        --teacher models/checkpoints/base/agf_gen5.pt --data data/val3 --samples 24
"""

from __future__ import annotations

import argparse
import json
from statistics import fmean

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.dataset import CooperativeDataset
from models.distill import TeacherInput, ego_view_mask, teacher_maps
from models.pairs import PairConfig, PairMaker
from models.refiner import masked_mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: model's)")
    parser.add_argument("--severities", default="0,1,2,3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teacher-input",
        default="all_agents",
        choices=TeacherInput.__args__,
        help="what the teacher sees of the clean sample (as distill.teacher_input)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, _, _ = load_checkpoint(args.checkpoint)
    teacher, _, _ = load_checkpoint(args.teacher)
    if model.refiner is None:
        raise SystemExit(f"{args.checkpoint}: the model has no refiner")
    dataset = CooperativeDataset(args.data, model.grid, egos="all")
    rng = np.random.default_rng(args.seed)
    indices = rng.choice(len(dataset), size=min(args.samples, len(dataset)), replace=False)
    clean = [dataset[int(i)] for i in indices]
    frames = [dataset.store.frame(dataset.items[int(i)][0]) for i in indices]  # read once
    result: dict[str, dict[str, float]] = {}
    for severity in (int(s) for s in args.severities.split(",")):
        config = PairConfig(
            severities=(max(severity, 1),),
            clean_fraction=1.0 if severity == 0 else 0.0,
            target="ego",
            pose_error_levels=(0.0,),
            curriculum=(max(severity, 1),),
        )
        maker = PairMaker(config)
        rows: dict[str, list[float]] = {}
        for index, sample, frame in zip(indices, clean, frames, strict=True):
            pair = maker(sample, frame, np.random.default_rng([args.seed, int(index)]), 1)
            with torch.no_grad():
                student, _ = model.encode_samples([pair])
                own_clean, _ = model.encode_samples([sample])
                refined = model.refine(student, args.steps)
                target = teacher_maps(teacher, [pair], model.fuse_at, args.teacher_input)
            assert refined is not None
            out = refined.feature

            view = ego_view_mask(model, [pair])

            def mse(a: torch.Tensor, b: torch.Tensor) -> float:
                return float(torch.mean((a - b) ** 2))

            def in_view(a: torch.Tensor, b: torch.Tensor, view: torch.Tensor = view) -> float:
                return float(masked_mse(a, b, view))

            for key, value in {
                "student_to_teacher": mse(student, target),
                "refined_to_teacher": mse(out, target),
                "student_to_clean": mse(student, own_clean),
                "refined_to_clean": mse(out, own_clean),
                "clean_to_teacher": mse(own_clean, target),
                "view_student_to_teacher": in_view(student, target),
                "view_refined_to_teacher": in_view(out, target),
                "view_student_to_clean": in_view(student, own_clean),
                "view_refined_to_clean": in_view(out, own_clean),
                "view_fraction": float(view.mean()),
                "change_relative": float((out - student).norm() / student.norm().clamp_min(1e-12)),
                "gamma": float(refined.gamma.mean()),
            }.items():
                rows.setdefault(key, []).append(value)
        result[f"severity_{severity}"] = {k: round(fmean(v), 6) for k, v in rows.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
