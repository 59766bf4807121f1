"""What each received neighbour does to the ego's detection: the trust's ``harm`` target.

The cleanliness target (:func:`models.pairs.cleanliness`) rates every corruption alike by its
severity, so the trust learnt to drop a neighbour with crosstalk that the gate already copes
with. This target asks the detector instead: for each neighbour slot, the ego frame's AP@0.5
with every neighbour fused minus its AP@0.5 with that neighbour's mask zeroed, both with the
trust neutral (every score equal: the attention and gate of the frozen model, nothing
dropped). A neighbour whose removal lowers the AP helps::

    target_i = sigmoid((AP(all) - AP(without i)) / temperature)

so 0.5 means "no effect". The detection *loss* is no such measure: by the loss a fogged
neighbour helps as much as a clean one (``scripts/neighbour_harm.py``: mean loss gain 0.046
against 0.047 on the robustness split), while fog's clutter costs AP; by the frame AP it
hurts more often than it helps, and crosstalk does not. :func:`neighbour_gains` gives both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from models.batch import CooperativeSample
from models.fusion import FusionStrategy
from models.head import HeadOutput
from models.inference import inference_mode
from models.metrics import evaluate_detections
from models.received import ForwardPass

if TYPE_CHECKING:
    from models.detector import CooperativeDetector


@contextmanager
def neutral_trust(fusion: FusionStrategy) -> Iterator[None]:
    """Inside: the fusion's per-neighbour trust scores nothing (a strategy without one is
    unchanged), so no neighbour is favoured or dropped."""
    before = fusion.neutral_trust
    fusion.neutral_trust = True
    try:
        yield
    finally:
        fusion.neutral_trust = before


def _row(output: HeadOutput, i: int) -> HeadOutput:
    """Sample ``i`` of a batched head output, as a batch of one."""
    dirs = None if output.dir_logits is None else output.dir_logits[i : i + 1]
    return HeadOutput(output.cls_logits[i : i + 1], output.box_preds[i : i + 1], dirs)


@dataclass(frozen=True)
class NeighbourGains:
    """What each of an ego's ``count`` neighbours adds, ``(count,)`` each: the rise of the
    frame's AP@0.5 (NaN without ground truth) and, when asked for, the fall of the detection
    loss, when it is fused beside the others rather than left out."""

    ap: torch.Tensor
    loss: torch.Tensor | None = None


@torch.no_grad()
def neighbour_gains(
    student: CooperativeDetector,
    ego: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
    count: int,
    sample: CooperativeSample,
    with_loss: bool = False,
) -> NeighbourGains:
    """The gains of one ego map ``(C, H, W)``'s first ``count`` neighbour slots: fused with
    all of them, then with each left out in turn (its mask zeroed: a zero mask contributes
    nothing), trust neutral, in one batch. ``inputs``: that ego's warped maps ``(K, C, H, W)``,
    masks ``(K, 1, H, W)``, cues and profiles, as the fusion read them
    (:attr:`FusedMaps.inputs`), so nothing is warped again. ``with_loss``: the loss gain too."""
    maps, masks, cues, profiles = (x[:count].unsqueeze(0) for x in inputs)
    n = count + 1
    masks = masks.repeat(n, 1, 1, 1, 1)
    left_out = torch.arange(count, device=masks.device)
    masks[left_out + 1, left_out] = 0.0
    with neutral_trust(student.fusion), inference_mode(student):
        fused, _ = student.fusion.scored(
            ego.unsqueeze(0).expand(n, -1, -1, -1),
            maps.expand(n, -1, -1, -1, -1),
            masks,
            cues.expand(n, -1, -1),
            profiles.expand(n, -1, -1),
        )
        output = student.head(student.bev(fused))
    aps = torch.tensor(
        [
            evaluate_detections([(d.boxes, d.scores, sample.gt_boxes)], (0.5,))[0.5]
            for d in student.detect(output)
        ]
    )
    if not with_loss:
        return NeighbourGains(aps[0] - aps[1:])
    targets = student.anchor_head.assign([sample.gt_boxes])  # the same for every variant
    losses = torch.stack(
        [student.anchor_head.loss(_row(output, i), targets).total for i in range(n)]
    ).float()
    return NeighbourGains(aps[0] - aps[1:], losses[1:] - losses[0])


@torch.no_grad()
def harm_targets(
    student: CooperativeDetector,
    passed: ForwardPass,
    samples: Sequence[CooperativeSample],
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slot of the batch's ``(B, K)`` reliability logits: the target in (0, 1) (module
    docstring) and a weight (1 for a real neighbour, 0 for padding and for a frame with no
    ground truth, whose AP says nothing); the slots are those of :attr:`FusedMaps.inputs`."""
    if not temperature > 0:
        raise ValueError(f"harm: temperature must be > 0, got {temperature!r}")
    fused = passed.fused
    if fused.inputs is None:
        raise ValueError("harm: the forward pass fused no neighbour maps")
    ego = passed.ego_maps if passed.refined is None else passed.refined.feature
    k = fused.inputs[0].shape[1]
    target = torch.zeros(len(samples), k)
    weight = torch.zeros(len(samples), k)
    for j, sample in enumerate(samples):
        count = len(fused.chosen[j])
        if count == 0 or len(sample.gt_boxes) == 0:
            continue
        row = tuple(x[j].detach() for x in fused.inputs)
        gains = neighbour_gains(student, ego[j].detach(), row, count, sample)
        target[j, :count] = torch.sigmoid(gains.ap / temperature)
        weight[j, :count] = 1.0
    return target, weight
