"""The cooperative detector: config validation, every preset end to end, fusion identities,
late-fusion box merge, the co-simulation feature path, gradients and a short overfit."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.batch import CooperativeSample
from models.detector import CooperativeDetector, build_detector
from models.detector_config import DetectorConfig, detector_presets, load_detector_config
from models.head import Detections
from models.inference import detect_features, predict
from models.late_fusion import detect_late
from models.received import NeighbourFeature
from scenarios.geometry import points_to_frame, yaw_pose

CARS_EGO = np.array(
    [[12.0, 3.0, -1.15, 4.5, 1.8, 1.5, 0.0], [-8.0, -6.0, -1.15, 4.5, 1.8, 1.5, math.pi / 2]],
    dtype=np.float32,
)


def scene_cloud(rng: np.random.Generator, to_sensor: np.ndarray, n: int = 3000) -> np.ndarray:
    """A ground ring around the sensor plus points on the surfaces of ``CARS_EGO`` (given in
    the ego frame), all in the sensor frame reached by ``to_sensor`` (ego -> sensor)."""
    n_ground = n * 2 // 3
    r = rng.uniform(3.0, 40.0, n_ground)
    az = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.c_[r * np.cos(az), r * np.sin(az), np.full(n_ground, -1.9), np.ones(n_ground)]
    per_car = (n - n_ground) // len(CARS_EGO)
    cars = []
    for x, y, z, length, width, height, yaw in CARS_EGO:
        local = rng.uniform(-0.5, 0.5, (per_car, 3)) * (length, width, height)
        face = rng.integers(0, 2, per_car)  # on the +-x or +-y side faces
        rows = np.arange(per_car)
        size = np.array([length, width])
        local[rows, face] = np.sign(local[rows, face]) * size[face] / 2
        c, s = math.cos(yaw), math.sin(yaw)
        xy = local[:, :2] @ np.array([[c, s], [-s, c]]) + (x, y)
        cars.append(np.c_[xy, local[:, 2] + z, np.full(per_car, 0.5)])
    ego_frame = np.concatenate(cars).astype(np.float32)
    return np.concatenate([ground.astype(np.float32), points_to_frame(ego_frame, to_sensor)])


def make_sample(n_neighbours: int = 2, seed: int = 0) -> CooperativeSample:
    rng = np.random.default_rng(seed)
    poses = [yaw_pose(20.0, 0.0, 0.0, math.pi), yaw_pose(-15.0, 5.0, 0.0, 0.3)][:n_neighbours]
    clouds = tuple(scene_cloud(rng, np.linalg.inv(t)) for t in poses)
    return CooperativeSample(
        scene_cloud(rng, np.eye(4)),
        clouds,
        np.stack(poses) if poses else np.zeros((0, 4, 4)),
        CARS_EGO,
    )


@pytest.fixture(scope="module")
def sample() -> CooperativeSample:
    return make_sample()


# ---- config -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "det.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_name_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ngrid: cpu\nfusion: max\nmax_neighbors: 3\n")
    with pytest.raises(ValueError, match=r"det\.yaml.*max_neighbors"):
        DetectorConfig.from_yaml(path)
    path = write(tmp_path, "name: x\nhead: {nms_threshold: 0.2}\n")
    unknown = r"det\.yaml: head: unknown key\(s\) \['nms_threshold'\]; known keys are .*'nms_iou'"
    with pytest.raises(ValueError, match=unknown):
        DetectorConfig.from_yaml(path)
    path = write(tmp_path, "name: x\nfeatures: {preset: cpu, pillar: {filters: [8]}}\n")
    with pytest.raises(
        ValueError, match=r"det\.yaml: features\.pillar: unknown key\(s\) \['filters'\]"
    ):
        DetectorConfig.from_yaml(path)


def test_grids_that_do_not_divide_are_rejected(tmp_path: Path) -> None:
    bad = "point_range: [-48, -32, -3, 48.2, 32, 1], voxel_size: [0.4, 0.4, 4]"
    with pytest.raises(ValueError, match=r"det\.yaml.*whole number"):
        DetectorConfig.from_yaml(write(tmp_path, f"name: x\ngrid: {{{bad}}}\n"))
    # 156 pillars along y: divides by the feature stride 2 but not by the backbone's 8.
    odd = "point_range: [-48, -32, -3, 48, 30.4, 1], voxel_size: [0.4, 0.4, 4]"
    with pytest.raises(ValueError, match=r"det\.yaml.*156 x 240.*stride 8"):
        DetectorConfig.from_yaml(write(tmp_path, f"name: x\ngrid: {{{odd}}}\n"))


def test_unknown_fusion_and_missing_presets(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"det\.yaml: fusion: must be 'agf', 'attention'.*got 'sum'"
    ):
        DetectorConfig.from_yaml(write(tmp_path, "name: x\nfusion: sum\n"))
    with pytest.raises(ValueError, match=r"det\.yaml.*fusion_options.*unknown option.*'width'"):
        DetectorConfig.from_yaml(
            write(tmp_path, "name: x\nfusion: agf\nfusion_options: {width: 3}\n")
        )
    with pytest.raises(ValueError, match=r"det\.yaml.*fusion 'none' takes no fusion_options"):
        DetectorConfig.from_yaml(
            write(tmp_path, "name: x\nfusion: none\nfusion_options: {hidden: 3}\n")
        )
    with pytest.raises(ValueError, match=r"det\.yaml.*refiner.*unknown.*'depth'"):
        DetectorConfig.from_yaml(write(tmp_path, "name: x\nrefiner: {depth: 3}\n"))
    with pytest.raises(ValueError, match="unknown detector preset 'cpu_nope'.*cpu_max"):
        load_detector_config("cpu_nope")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_detector_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ValueError, match="unknown grid preset 'gpu'"):
        DetectorConfig(grid="gpu")  # type: ignore[arg-type]


def test_fuse_at_is_checked(tmp_path: Path) -> None:
    expected = r"det\.yaml: fuse_at: must be 'encoder' or 'backbone', got 'head'"
    with pytest.raises(ValueError, match=expected):
        DetectorConfig.from_yaml(write(tmp_path, "name: x\nfusion: max\nfuse_at: head\n"))


def test_fuse_points_share_weights_and_agree_without_neighbours() -> None:
    """The fuse point only moves the split between ``encode`` and ``head``: the same weights
    give the same logits for a lone ego; messages are the pillar map or the backbone's map."""
    torch.manual_seed(0)
    at_encoder = build_detector("cpu_attention").eval()
    config = dataclasses.replace(at_encoder.config, fuse_at="backbone")
    at_backbone = build_detector(config).eval()
    at_backbone.load_state_dict(at_encoder.state_dict())
    assert at_encoder.message_shape == (32, 160, 240)
    assert at_backbone.message_shape == (96, 80, 120)
    alone = make_sample(0)
    with torch.no_grad():
        a, b = at_encoder([alone]), at_backbone([alone])
        assert at_encoder.encode([alone.ego_points]).shape == (1, 32, 160, 240)
    torch.testing.assert_close(a.cls_logits, b.cls_logits)
    torch.testing.assert_close(a.box_preds, b.box_preds)


def test_presets_round_trip(tmp_path: Path) -> None:
    names = detector_presets()
    assert {"cpu_none", "cpu_late", "cpu_early", "cpu_max", "cpu_attention"} <= set(names)
    assert {"opv2v_attention", "cpu_max_sparse"} <= set(names)
    for name in names:
        config = load_detector_config(name)
        assert config.name == name
        assert DetectorConfig.from_dict(config.to_dict()) == config
        config.to_yaml(tmp_path / f"{name}.yaml")
        assert load_detector_config(tmp_path / f"{name}.yaml") == config
    assert load_detector_config("cpu_max_sparse").features.encoder == "sparse_voxel"
    assert load_detector_config("opv2v_attention").grid.bev_shape == (100, 352)


# ---- every preset end to end --------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["cpu_none", "cpu_late", "cpu_early", "cpu_max", "cpu_attention", "cpu_max_sparse"]
)
def test_cpu_presets_forward_loss_predict(name: str, sample: CooperativeSample) -> None:
    torch.manual_seed(0)
    model = build_detector(name)
    out = model([sample, make_sample(1, seed=1)])
    h, w = model.grid.bev_shape
    assert out.cls_logits.shape == (2, 2, h, w) and out.box_preds.shape == (2, 14, h, w)
    loss = model.loss([sample, make_sample(1, seed=1)], out)
    assert torch.isfinite(loss.total) and loss.num_positive > 0
    loss.total.backward()
    dets = predict(model, [sample], score_threshold=0.0)
    assert model.training  # predict restores the mode
    assert len(dets) == 1 and dets[0].boxes.shape[1:] == (7,) and len(dets[0]) > 0
    assert np.all(np.diff(dets[0].scores) <= 0)


def test_opv2v_preset_forward() -> None:
    torch.manual_seed(0)
    model = build_detector("opv2v_attention").eval()
    assert model.message_shape[0] == 384
    with torch.no_grad():
        out = model([make_sample(1)])
    assert out.cls_logits.shape == (1, 2, 100, 352)


# ---- fusion identities and neighbour selection --------------------------------------------


@pytest.mark.parametrize("fusion", ["max", "attention"])
def test_identical_neighbour_at_identity_changes_nothing(
    fusion: str, sample: CooperativeSample
) -> None:
    """Max of equal maps and attention over equal rows both return the ego feature, so an
    identity-posed copy of the ego gives the "none" model's logits with the same weights."""
    torch.manual_seed(0)
    model = build_detector(f"cpu_{fusion}").eval()
    twin = CooperativeSample(sample.ego_points, (sample.ego_points,), np.eye(4)[None], CARS_EGO)
    alone = build_detector("cpu_none").eval()
    alone.load_state_dict(model.state_dict())
    with torch.no_grad():
        fused, single = model([twin]), alone([twin])
    torch.testing.assert_close(fused.cls_logits, single.cls_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.box_preds, single.box_preds, atol=1e-5, rtol=1e-5)


def test_neighbour_selection_by_range_and_count(sample: CooperativeSample) -> None:
    config = DetectorConfig(name="t", fusion="max", max_neighbours=2, comm_range=30.0)
    model = CooperativeDetector(config).eval()
    far = [
        yaw_pose(25, 0, 0, 0),
        yaw_pose(100, 0, 0, 0),
        yaw_pose(5, 0, 0, 0),
        yaw_pose(8, 0, 0, 0),
    ]
    assert model.select_neighbours(np.stack(far)).tolist() == [2, 3]
    # A neighbour beyond comm_range is ignored: same logits as without it.
    out_of_range = CooperativeSample(
        sample.ego_points, sample.neighbour_points[:1], yaw_pose(80, 0, 0, 0)[None], CARS_EGO
    )
    alone = CooperativeSample(sample.ego_points, (), np.zeros((0, 4, 4)), CARS_EGO)
    with torch.no_grad():
        torch.testing.assert_close(model([out_of_range]).cls_logits, model([alone]).cls_logits)


def test_early_fusion_merges_neighbour_points_into_ego_frame(sample: CooperativeSample) -> None:
    model = build_detector("cpu_early")
    merged = model.merged_cloud(sample)
    n0, n1 = len(sample.ego_points), len(sample.neighbour_points[0])
    np.testing.assert_array_equal(merged[:n0], sample.ego_points)
    expect = points_to_frame(sample.neighbour_points[0], sample.neighbour_to_ego[0])
    np.testing.assert_allclose(merged[n0 : n0 + n1], expect, atol=1e-4)


def test_gradients_flow_through_warp_and_fusion() -> None:
    model = build_detector("cpu_attention")
    c, h, w = model.message_shape
    ego = torch.rand(1, c, h, w, requires_grad=True)
    nbr = torch.rand(1, c, h, w, requires_grad=True)
    warped = model.warp(nbr, yaw_pose(8.0, 0.0, 0.0, 0.2)[None])
    fused = model.fuse(ego, warped.features.unsqueeze(0), warped.mask.unsqueeze(0))
    model.head(model.bev(fused)).cls_logits.sum().backward()
    assert nbr.grad is not None and float(nbr.grad.abs().sum()) > 0
    assert ego.grad is not None and float(ego.grad.abs().sum()) > 0


# ---- late fusion ---------------------------------------------------------------------------


def test_late_merge_projects_boxes_and_suppresses_duplicates() -> None:
    model = build_detector("cpu_late")
    # Neighbour 20 m ahead of the ego, facing back: its +x is the ego's -x.
    facing_back = yaw_pose(20.0, 0.0, 0.0, math.pi)
    own = Detections(
        np.array([[10.0, 0.2, -1, 4.5, 1.8, 1.5, 0.0]], np.float32), np.array([0.9], np.float32)
    )
    theirs = Detections(
        np.array(
            [
                [10.0, 0.0, -1, 4.5, 1.8, 1.5, 0.0],  # the ego's car again -> suppressed
                [-5.0, 3.0, -1, 4.5, 1.8, 1.5, 0.5],  # -> ego (25, -3), yaw 0.5 + pi
                [-40.0, 0.0, -1, 4.5, 1.8, 1.5, 0.0],  # -> ego x = 60, outside the grid
            ],
            np.float32,
        ),
        np.array([0.8, 0.7, 0.95], np.float32),
    )
    far = Detections(
        np.array([[0.0, 0, -1, 4.5, 1.8, 1.5, 0]], np.float32), np.array([0.99], np.float32)
    )
    merged = detect_late(model, own, [(theirs, facing_back), (far, yaw_pose(90, 0, 0, 0))])
    np.testing.assert_allclose(merged.scores, [0.9, 0.7])
    np.testing.assert_allclose(merged.boxes[0], own.boxes[0])
    expect = [25.0, -3.0, -1, 4.5, 1.8, 1.5, 0.5 - math.pi]
    np.testing.assert_allclose(merged.boxes[1], expect, atol=1e-5)


def test_late_merge_votes_across_agents() -> None:
    """The ego (score 0.9) and a neighbour (0.6) see one car 0.5 m apart: NMS keeps the ego's
    box; voting at IoU 0.3 moves it to the score-weighted mean, x = (0.9 * 10 + 0.6 * 10.5) / 1.5
    = 10.2, and keeps its score; a lone box is unchanged."""
    model = build_detector("cpu_late_sizes")
    car = [4.5, 1.8, 1.5, 0.0]
    own = Detections(
        np.array([[10.0, 0.0, -1, *car], [-20.0, 5.0, -1, *car]], np.float32),
        np.array([0.9, 0.5], np.float32),
    )
    theirs = Detections(np.array([[10.5, 0.0, -1, *car]], np.float32), np.array([0.6], np.float32))
    assert model.anchor_head.config.vote_iou == pytest.approx(0.3)
    merged = detect_late(model, own, [(theirs, np.eye(4))])
    np.testing.assert_allclose(merged.scores, [0.9, 0.5])
    np.testing.assert_allclose(merged.boxes[:, 0], [10.2, -20.0], atol=1e-5)
    model.anchor_head.config = dataclasses.replace(model.anchor_head.config, vote_iou=0.0)
    np.testing.assert_allclose(
        detect_late(model, own, [(theirs, np.eye(4))]).boxes[:, 0], [10.0, -20.0]
    )


def test_the_ego_seen_by_its_neighbours_is_not_a_detection(sample: CooperativeSample) -> None:
    """A neighbour 20 m ahead, facing back, reports the ego's own car at (20, 0) in its frame:
    that is (0, 0) in the ego frame and is dropped; a car 3 m beside the ego is kept."""
    model = build_detector("cpu_late")
    facing_back = yaw_pose(20.0, 0.0, 0.0, math.pi)
    theirs = Detections(
        np.array(
            [[20.0, 0.3, -1, 4.5, 1.8, 1.5, math.pi], [20.0, 3.0, -1, 4.5, 1.8, 1.5, 0.0]],
            np.float32,
        ),
        np.array([0.9, 0.8], np.float32),
    )
    nothing = Detections(np.zeros((0, 7), np.float32), np.zeros(0, np.float32))
    merged = detect_late(model, nothing, [(theirs, facing_back)])
    np.testing.assert_allclose(merged.boxes[:, :2], [[0.0, -3.0]], atol=1e-5)
    np.testing.assert_array_equal(
        model.clear_of_ego(np.array([[1.4, 0.3, 0, 4, 2, 1.5, 0], [1.6, 0, 0, 4, 2, 1.5, 0]])),
        [False, True],
    )
    keep_all = build_detector(dataclasses.replace(model.config, ego_clearance=0.0))
    assert len(detect_late(keep_all, nothing, [(theirs, facing_back)])) == 2
    with pytest.raises(ValueError, match="ego_clearance"):
        dataclasses.replace(model.config, ego_clearance=-1.0)


def test_late_predict_equals_manual_per_agent_merge(sample: CooperativeSample) -> None:
    torch.manual_seed(0)
    model = build_detector("cpu_late").eval()
    clouds = [sample.ego_points, *sample.neighbour_points]
    with torch.no_grad():
        per_agent = model.detect(model.head(model.bev(model.encode(clouds))), score_threshold=0.0)
    manual = detect_late(
        model, per_agent[0], list(zip(per_agent[1:], sample.neighbour_to_ego, strict=True))
    )
    got = predict(model, [sample], score_threshold=0.0)[0]
    np.testing.assert_allclose(got.boxes, manual.boxes, atol=1e-5)
    np.testing.assert_allclose(got.scores, manual.scores, atol=1e-6)


# ---- the co-simulation path ---------------------------------------------------------------


@pytest.mark.parametrize("fuse_at", ["encoder", "backbone"])
@pytest.mark.parametrize("fusion", ["max", "attention"])
def test_detect_features_equals_predict(
    fusion: str, fuse_at: str, sample: CooperativeSample
) -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(load_detector_config(f"cpu_{fusion}"), fuse_at=fuse_at)
    model = build_detector(config).eval()
    with torch.no_grad():
        bev = model.encode([sample.ego_points, *sample.neighbour_points])
    nbrs = list(zip(bev[1:], sample.neighbour_to_ego, strict=True))

    def detect_from_features(ego: torch.Tensor, items: list, **kw: float) -> Detections:
        return detect_features(model, ego, [items], **kw)[0].detections

    got = detect_from_features(bev[0], nbrs, score_threshold=0.0)
    want = predict(model, [sample], score_threshold=0.0)[0]
    assert len(got) > 0
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-5)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    # All cells sent == no mask; nothing sent == ego alone.
    shape = model.message_grid.bev_shape
    sent = [NeighbourFeature(f, t, np.ones(shape, bool)) for f, t in nbrs]
    all_sent = detect_from_features(bev[0], sent, score_threshold=0.0)
    np.testing.assert_allclose(all_sent.scores, want.scores, atol=1e-6)
    none_sent = [(f, t, torch.zeros(shape, dtype=torch.bool)) for f, t in nbrs]
    alone = detect_from_features(bev[0], [], score_threshold=0.0)
    nothing = detect_from_features(bev[0], none_sent, score_threshold=0.0)
    np.testing.assert_allclose(nothing.scores, alone.scores, atol=1e-6)
    with pytest.raises(ValueError, match="merge_late"):
        detect_features(build_detector("cpu_late"), bev[0], [nbrs])


def test_sent_mask_is_warped_with_the_features() -> None:
    model = build_detector("cpu_max")
    h, w = model.message_grid.bev_shape
    sent = torch.zeros(h, w, dtype=torch.bool)
    sent[:, :10] = True  # the neighbour sent its 10 leftmost columns only
    shift = yaw_pose(8 * model.message_grid.cell_size, 0.0, 0.0, 0.0)  # 8 cells towards +x
    warped = model.warp(torch.ones(1, model.message_shape[0], h, w), shift[None], sent[None])
    valid_cols = torch.nonzero(warped.mask[0, 0].all(dim=0)).flatten().tolist()
    assert valid_cols == list(range(8, 18))


# ---- training ------------------------------------------------------------------------------


def test_overfit_one_cooperative_sample(sample: CooperativeSample) -> None:
    torch.manual_seed(0)
    model = build_detector("cpu_max")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = model.loss([sample], model([sample]))
        loss.total.backward()
        opt.step()
        losses.append(float(loss.total.detach()))
    assert losses[-1] < losses[0] / 10, losses
