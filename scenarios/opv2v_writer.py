"""Write any Frame sequence as an OPV2V scenario folder that OpenCOOD can load.

Each agent of each frame becomes ``<out_dir>/<agent_id>/NNNNNN.pcd`` (OpenCDA's ASCII PCD by
default) and ``NNNNNN.yaml``; frame numbers are 6-digit CARLA-tick numbers
``start_frame + 2 * k`` for the k-th frame written (10 Hz dumps of a 20 Hz simulation), so the
reader gives the k-th frame ``index = k`` and ``timestamp = k / 10``. A ``data_protocol.yaml``
records how the folder was made.

Round-trip contract: ``OPV2VScenario(out_dir).frames()`` equals (``Frame.__eq__``, exactly)
:func:`opv2v_canonical` of the frames written, which is the input with everything the format
cannot hold rounded the way the file rounds it; see that function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.frame import Frame
from scenarios.opv2v import TICK_HZ, frame_from_records, opencood_cav_order
from scenarios.opv2v_yaml import cav_yaml_dict, dump_yaml, parse_cav_yaml
from scenarios.pcd import Encoding, IntensityField, quantize_intensity, write_pcd

__all__ = ["FRAME_STEP", "opv2v_canonical", "write_opv2v"]

FRAME_STEP = 2  # CARLA ticks between consecutive OPV2V dumps


def _agent_order(frames: Sequence[Frame]) -> list[int]:
    """All agent ids of the sequence in the order the reader will list them (ego first).

    Raises ValueError when the frames disagree on the ego or when OpenCOOD, which takes the
    first CAV folder in its order as the ego, would pick another agent.
    """
    egos = {f.ego_id for f in frames}
    if len(egos) != 1:
        raise ValueError(f"all frames must have the same ego, got egos {sorted(egos)}")
    ids = {agent_id for f in frames for agent_id in f.agents}
    order = [int(name) for name in opencood_cav_order(str(i) for i in ids)]
    ego = egos.pop()
    if order[0] != ego:
        raise ValueError(
            f"ego {ego} would not be OpenCOOD's ego: it takes the first CAV folder of "
            f"{[str(i) for i in order]} (names sorted as strings, a leading negative id moved "
            "to the end); give the ego an id that sorts first"
        )
    return order


def _yaml_dicts(frame: Frame, vehicle_radius: float | None) -> dict[int, dict[str, Any]]:
    """Agent id -> yaml mapping for one frame; each agent lists every object but itself."""
    speeds = {agent_id: agent.speed for agent_id, agent in frame.agents.items()}
    out = {}
    for agent_id, agent in frame.agents.items():
        vehicles = {}
        for object_id, box in zip(frame.objects.ids, frame.objects.boxes, strict=True):
            if int(object_id) == agent_id:
                continue
            if vehicle_radius is not None:
                offset = box[:2] - agent.lidar_pose[:2, 3]
                if float(np.hypot(*offset)) > vehicle_radius:
                    continue
            vehicles[int(object_id)] = (box, speeds.get(int(object_id), 0.0))
        out[agent_id] = cav_yaml_dict(
            agent.lidar_pose, agent.vehicle_pose, agent.speed, agent.is_rsu, vehicles
        )
    return out


def _stored_points(points: np.ndarray, intensity_field: IntensityField) -> np.ndarray:
    """The points as the PCD file gives them back (intensity quantized when packed in rgb)."""
    out = np.array(points, dtype=np.float32, copy=True)
    if intensity_field == "rgb":
        out[:, 3] = quantize_intensity(out[:, 3])
    return out


def opv2v_canonical(
    frames: Iterable[Frame],
    vehicle_radius: float | None = None,
    intensity_field: IntensityField = "rgb",
) -> list[Frame]:
    """Exactly what writing ``frames`` with :func:`write_opv2v` and reading them back gives.

    Differences from the input: index = position and timestamp = position / 10; poses go
    through ``[x, y, z, roll, yaw, pitch]`` in float32 (metres, degrees); a missing
    ``vehicle_pose`` becomes the LiDAR pose; speeds through float32 km/h; intensities become
    R / 255 (``rgb``); boxes through float32 centre, half-size and yaw in degrees; objects sort
    by id, drop categories (all "car") and hits, and an object that is an agent survives only
    if another agent of the frame lists it; agents are ordered ego first, then OpenCOOD order.
    Inputs already on these grids come back equal to themselves (poses within float rounding).
    """
    frames = list(frames)
    order = _agent_order(frames)
    out = []
    for position, frame in enumerate(frames):
        dicts = _yaml_dicts(frame, vehicle_radius)
        records = [
            (
                agent_id,
                parse_cav_yaml(dicts[agent_id], f"agent {agent_id}"),
                _stored_points(frame.agents[agent_id].points, intensity_field),
            )
            for agent_id in order
            if agent_id in frame.agents
        ]
        timestamp = position * FRAME_STEP / TICK_HZ
        out.append(frame_from_records(position, timestamp, records))
    return out


def write_opv2v(
    frames: Iterable[Frame],
    out_dir: str | Path,
    *,
    start_frame: int = 0,
    vehicle_radius: float | None = None,
    encoding: Encoding = "ascii",
    intensity_field: IntensityField = "rgb",
    protocol: Mapping[str, Any] | None = None,
    on_frame_written: Callable[[int], None] | None = None,
) -> Path:
    """Write ``frames`` as one OPV2V scenario folder ``out_dir`` (created; must be empty).

    ``vehicle_radius`` (metres, BEV, around each agent's LiDAR) limits each agent's
    ``vehicles`` list as OpenCDA's dumps do; None lists every object. ``encoding`` /
    ``intensity_field`` choose the PCD flavour (default: OpenCDA's ASCII with rgb).
    ``protocol`` adds free-form entries to ``data_protocol.yaml``. ``on_frame_written(k)`` is
    called after the k-th frame is on disk (for progress bars). Returns ``out_dir``.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("write_opv2v: no frames to write")
    if start_frame < 0 or start_frame + FRAME_STEP * (len(frames) - 1) > 999_999:
        raise ValueError(f"write_opv2v: frame numbers from {start_frame} do not fit 6 digits")
    order = _agent_order(frames)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output folder is not empty")
    for agent_id in order:
        (out / str(agent_id)).mkdir(parents=True, exist_ok=True)
    for position, frame in enumerate(frames):
        stem = f"{start_frame + FRAME_STEP * position:06d}"
        for agent_id, data in _yaml_dicts(frame, vehicle_radius).items():
            folder = out / str(agent_id)
            write_pcd(
                folder / f"{stem}.pcd", frame.agents[agent_id].points, encoding, intensity_field
            )
            dump_yaml(data, folder / f"{stem}.yaml")
        if on_frame_written is not None:
            on_frame_written(position)
    dump_yaml(
        {
            "writer": "v2x-cosim scenarios.opv2v_writer",
            "rate_hz": TICK_HZ / FRAME_STEP,
            "start_frame": start_frame,
            "frame_step": FRAME_STEP,
            "num_frames": len(frames),
            "cav_ids": order,
            "pcd": {"encoding": encoding, "intensity_field": intensity_field},
            **dict(protocol or {}),
        },
        out / "data_protocol.yaml",
    )
    return out
