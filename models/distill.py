"""Diff-KD teacher-student losses: the PKD refiner learns the clean teacher's features.

The **teacher** is a frozen detector that sees *clean* data with global context, at the map the
student fuses (the encoder's pseudo-image when the student fuses at the encoder, else the
backbone's output): every agent's clean points merged into the ego frame (early fusion,
``sample.clean``), or a feature-fusion model's fused map of the clean sample (clean
intermediate fusion). The second lives in the student's own feature space when the teacher is
the student's frozen starting point, so the student's head reads what the refiner aims at.
The **student** encodes each agent's *corrupted* points; its refiner repairs the ego map, and
the refined map is fused and detected. One step's loss (:func:`distill_loss`)::

    total = w_det * detection(refined, fused)          head loss against the ground truth
          + w_diff * diffusion(teacher | student)      denoiser trained on teacher maps
          + w_feat * mse(refined student, teacher)     the refined map moves to the teacher's
                                                       (in the ego's view: :func:`ego_view_mask`)
          + w_ae * autoencoder(teacher)                the linear channel compressor
          + w_adapter * bce(gamma, cleanliness)        the noise adapter reads corruption
          + w_reliability * bce(score, target)         AGF's per-neighbour reliability logit
                                                       against each neighbour's cleanliness,
                                                       or its measured harm (models.harm)

A model without a refiner (AGF alone) trains on the same pairs with the detection term and,
when its fusion scores neighbours, the reliability term.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from pydantic import Field

from configkit import Float, config_dataclass
from models.batch import CooperativeSample
from models.detector import CooperativeDetector
from models.harm import harm_targets
from models.head import Normaliser
from models.pairs import cleanliness
from models.refiner import masked_mse
from models.voxelize import voxel_indices

Weight = Annotated[Float, Field(ge=0.0)]
#: Where the feature and diffusion losses look (:func:`ego_view_mask`, or the whole map).
DistillRegion = Literal["ego_view", "map"]
#: What the reliability logit learns: the severity of a neighbour's corruption
#: (:func:`models.pairs.cleanliness`) or what leaving it out does to the frame's AP
#: (:mod:`models.harm`).
ReliabilityTarget = Literal["cleanliness", "harm"]


@dataclass(frozen=True)
class TrustTarget:
    """Which reliability target a step uses and, for ``harm``, its ``temperature``."""

    kind: ReliabilityTarget = "cleanliness"
    temperature: float = 0.01


@config_dataclass
class DistillWeights:
    """The loss weights (the ``distill.weights`` section of a training config)."""

    detection: Weight = 1.0
    diffusion: Weight = 1.0
    feature: Weight = 1.0
    autoencoder: Weight = 0.1
    adapter: Weight = 0.1
    # AGF's reliability logit against each neighbour's cleanliness (0: the detection loss alone
    # trains it, as before; that did not learn to shut out a fogged neighbour).
    reliability: Weight = 0.0


@dataclass
class DistillLoss:
    """The weighted terms (scalars), their sum (what to backpropagate) and the positives."""

    total: torch.Tensor
    detection: torch.Tensor
    diffusion: torch.Tensor
    feature: torch.Tensor
    autoencoder: torch.Tensor
    adapter: torch.Tensor
    reliability: torch.Tensor
    num_positive: int

    def row(self) -> dict[str, float]:
        """The weighted terms as plain floats, for the step log."""
        return {
            f.name: float(getattr(self, f.name).detach())
            for f in dataclasses.fields(self)
            if f.name not in ("total", "num_positive")
        }


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (records which teacher a student was distilled from)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_teacher(teacher: CooperativeDetector, student: CooperativeDetector) -> None:
    """The teacher must see every agent (early fusion of the clean clouds, or clean
    intermediate fusion at the student's fuse point) and produce the student's map: same grid,
    channels and stage."""
    if teacher.config.fusion != "early" and not (
        teacher.config.is_feature_fusion and teacher.fuse_at == student.fuse_at
    ):
        raise ValueError(
            f"distill: the teacher must fuse every agent's clean data (early fusion, or "
            f"feature fusion at the student's fuse point {student.fuse_at!r}), got fusion "
            f"{teacher.config.fusion!r} at {teacher.fuse_at!r}"
        )
    shape = teacher_shape(teacher, student)
    if shape != student.map_shape:
        raise ValueError(
            f"distill: teacher {teacher.config.name!r} gives maps {shape} at the student's stage, "
            f"student {student.config.name!r} refines {student.map_shape}"
        )


def teacher_shape(teacher: CooperativeDetector, student: CooperativeDetector) -> tuple[int, ...]:
    """``(C, H, W)`` of the teacher's map at the student's fuse point."""
    if teacher.config.is_feature_fusion:
        return teacher.map_shape
    if student.fuse_at == "encoder":
        grid = dataclasses.replace(teacher.grid, feature_stride=1)
        return (teacher.features.encoder.out_channels, *grid.bev_shape)
    return (teacher.features.out_channels, *teacher.grid.bev_shape)


#: What the teacher sees of the clean sample: every agent (global context) or the ego alone.
TeacherInput = Literal["all_agents", "ego"]


@torch.no_grad()
def teacher_maps(
    teacher: CooperativeDetector,
    samples: Sequence[CooperativeSample],
    stage: str,
    view: TeacherInput = "all_agents",
) -> torch.Tensor:
    """The teacher's maps ``(B, C, H, W)`` of each sample's clean view at ``stage``
    (``encoder``: the pillar pseudo-image; ``backbone``: the 2D backbone's). ``all_agents``:
    an early-fusion teacher encodes the merged clean clouds, a feature-fusion teacher (clean
    intermediate fusion) returns its fused map of the clean sample, refiner off. ``ego``: the
    teacher's map of the ego's clean points alone (with the student's own frozen weights as
    the teacher: exactly what the student sees without the corruption). A sample without a
    clean view (training with no ``corrupt`` section) is clean itself."""
    clean = [s if s.clean is None else s.clean for s in samples]
    if view == "ego":
        if teacher.config.is_feature_fusion:
            return teacher.own_map(teacher.encode([s.ego_points for s in clean]))
        maps = teacher.features.encoder(teacher.features.voxelize([s.ego_points for s in clean]))
    elif teacher.config.is_feature_fusion:
        return teacher.forward_pass(clean, refine_steps=0).fused.features
    else:
        voxels = teacher.features.voxelize([teacher.merged_cloud(s) for s in clean])
        maps = teacher.features.encoder(voxels)
    return maps if stage == "encoder" else teacher.features.backbone(maps)


def ego_view_mask(
    student: CooperativeDetector, samples: Sequence[CooperativeSample]
) -> torch.Tensor:
    """``(B, 1, H, W)`` float mask of the student's map cells holding any of the ego's own
    points, clean or corrupted: what a refiner of the ego map can repair.

    Elsewhere the teacher's map holds what only a neighbour sees; the ego map has nothing
    there to refine from, yet over the whole map that is most of the loss
    (``scripts/refiner_diagnostics.py``: 0.084 of the 0.095 student-teacher distance at
    severity 2 is the clean ego's own gap to the teacher).
    """
    grid = student.grid
    stride = 1 if student.fuse_at == "encoder" else grid.feature_stride
    ny, nx = grid.ny, grid.nx
    masks = torch.zeros(len(samples), ny * nx)
    for b, sample in enumerate(samples):
        views = [sample.ego_points] + ([] if sample.clean is None else [sample.clean.ego_points])
        for points in views:
            idx, inside = voxel_indices(torch.tensor(points[:, :3]), grid)
            cells = idx[inside, 1] * nx + idx[inside, 2]
            masks[b, cells] = 1.0
    mask = masks.view(len(samples), 1, ny, nx)
    return F.max_pool2d(mask, stride) if stride > 1 else mask


def distill_loss(
    student: CooperativeDetector,
    samples: Sequence[CooperativeSample],
    teacher: torch.Tensor | None,
    weights: DistillWeights,
    refine_steps: int | None = None,
    normaliser_of: Normaliser | None = None,
    region: DistillRegion = "ego_view",
    trust: TrustTarget = TrustTarget(),
) -> DistillLoss:
    """One training step's loss (module docstring); ``teacher`` are :func:`teacher_maps` of
    ``samples`` (None: detection only, which a model without a refiner uses);
    ``normaliser_of`` divides the detection terms (:meth:`AnchorHead.loss`); ``region``
    where the feature and diffusion terms compare maps; ``trust`` the reliability target."""
    passed = student.forward_pass(samples, refine_steps)
    output = student.head(student.bev(passed.fused.features))
    head_loss = student.loss(samples, output, normaliser_of)
    zero = head_loss.total.new_zeros(())
    terms: dict[str, Any] = {
        "diffusion": zero,
        "feature": zero,
        "autoencoder": zero,
        "adapter": zero,
        "reliability": zero,
    }
    scores = passed.fused.reliability
    if weights.reliability > 0 and scores is not None:
        if trust.kind == "harm":
            target, weight = harm_targets(student, passed, samples, trust.temperature)
        else:
            target, weight = cleanliness_targets(
                scores, passed.fused.chosen, samples, student.select_neighbours
            )
        terms["reliability"] = weights.reliability * reliability_loss(scores, target, weight)
    refiner = student.refiner
    if refiner is not None:
        if teacher is None:
            raise ValueError("distill: a model with a refiner needs teacher maps")
        teacher = teacher.to(passed.ego_maps)
        mask = None if region == "map" else ego_view_mask(student, samples).to(teacher)
        # The teacher latent is a detached target (as DiffKD): else the encoder could lower the
        # loss by shrinking every latent; the autoencoder term trains it on the teacher.
        terms["diffusion"] = weights.diffusion * refiner.diffusion_loss(
            teacher, passed.ego_maps, detach_target=True, mask=mask
        )
        if passed.refined is not None:
            terms["feature"] = weights.feature * masked_mse(passed.refined.feature, teacher, mask)
            target = torch.tensor([cleanliness(s.severity) for s in samples]).to(teacher)
            terms["adapter"] = weights.adapter * refiner.adapter_loss(passed.refined.gamma, target)
        terms["autoencoder"] = weights.autoencoder * refiner.autoencoder_loss(teacher)
    detection = weights.detection * head_loss.total
    total = detection + sum(terms.values())
    return DistillLoss(total, detection, num_positive=head_loss.num_positive, **terms)


def cleanliness_targets(
    scores: torch.Tensor,
    chosen: Sequence[Any],
    samples: Sequence[CooperativeSample],
    select: Callable[[NDArray[np.float64]], NDArray[np.int64]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slot of the logits ``(B, K)``: the cleanliness of the chosen neighbour's points
    (:func:`models.pairs.cleanliness` of its severity) and a weight, 0 for padding. ``chosen``
    indexes the neighbours the encoder was offered, ``select(sample.neighbour_to_ego)`` of the
    sample's (:meth:`CooperativeDetector.select_neighbours`: by range). Pose error is not in
    the target: its level reaches the score as a cue."""
    target = torch.zeros(scores.shape)
    weight = torch.zeros(scores.shape)
    for j, (idx, sample) in enumerate(zip(chosen, samples, strict=True)):
        offered = select(sample.neighbour_to_ego)
        severity = np.asarray(sample.neighbour_severity)[offered[np.asarray(idx, np.int64)]]
        target[j, : len(idx)] = torch.tensor([cleanliness(int(v)) for v in severity])
        weight[j, : len(idx)] = 1.0
    return target, weight


def reliability_loss(
    scores: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Mean BCE of the reliability logits ``(B, K)`` against ``target`` in [0, 1], over the
    slots whose ``weight`` is non-zero (0 when there is none)."""
    target, weight = target.to(scores), weight.to(scores)
    if not bool(weight.any()):
        return scores.new_zeros(())
    loss = F.binary_cross_entropy_with_logits(scores, target, weight=weight, reduction="sum")
    return loss / weight.sum()
