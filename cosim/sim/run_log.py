"""The rows a simulation logs as it goes (receptions, detections, per-frame counts, stage
timings, vehicle failures) and the Arrow schemas of the tables they become."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from agents.steps import REFUSED_STATUSES, EgoResult
from cosim.sim.executors import VehicleFailure

EPS_S = 1e-9  # simulated seconds: a message sent this close before t counts as sent at t

RECEPTION_SCHEMA = pa.schema(
    [
        ("tick", pa.int64()),
        ("t", pa.float64()),
        ("ego", pa.int64()),
        ("seq", pa.int64()),
        ("sender", pa.int64()),
        ("t_send", pa.float64()),
        ("age_s", pa.float64()),
        ("stale", pa.bool_()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("held", pa.bool_()),
    ]
)
DETECTION_SCHEMA = pa.schema(
    [
        ("tick", pa.int64()),
        ("t", pa.float64()),
        ("ego", pa.int64()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("z", pa.float32()),
        ("l", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
        ("yaw", pa.float32()),
        ("score", pa.float32()),
    ]
)
FRAME_SCHEMA = pa.schema(
    [
        ("tick", pa.int64()),
        ("t", pa.float64()),
        ("ego", pa.int64()),
        ("ego_ok", pa.bool_()),
        ("num_det", pa.int64()),
        ("num_gt", pa.int64()),
        ("tp@0.3", pa.int64()),
        ("tp@0.5", pa.int64()),
        ("tp@0.7", pa.int64()),
        ("received", pa.int64()),
        ("fused", pa.int64()),
        ("stale_fused", pa.int64()),
        ("codec_errors", pa.int64()),
        ("refine_gamma", pa.float64()),
        ("refine_steps", pa.int64()),
        ("fused_wire_bytes", pa.int64()),  # wire bytes of the messages fused this frame
    ]
)
TIMING_SCHEMA = pa.schema(
    [
        ("tick", pa.int64()),
        ("agent", pa.int64()),
        ("stage", pa.string()),
        ("seconds", pa.float64()),
    ]
)
SCHEMAS = {
    "receptions": RECEPTION_SCHEMA,
    "detections": DETECTION_SCHEMA,
    "frames": FRAME_SCHEMA,
    "timings": TIMING_SCHEMA,
}


class RunLog:
    """A run's rows so far, per table (:data:`SCHEMAS`), and its vehicle failures (``events``);
    ``wire_of`` maps a reception's seq to its wire bytes, for the frames table."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
        self.events: list[dict[str, Any]] = []
        self.wire_of: dict[int, int] = {}

    def time(self, tick: int, agent: int, timings: dict[str, float]) -> None:
        """One timings row per stage (``agent`` -1: the driver's own stages)."""
        for stage, seconds in timings.items():
            self.rows["timings"].append(
                {"tick": tick, "agent": agent, "stage": stage, "seconds": seconds}
            )

    def failure(self, tick: int, failure: VehicleFailure) -> None:
        self.events.append(
            {
                "tick": tick,
                "agent": failure.agent_id,
                "stage": failure.stage,
                "error": failure.error,
            }
        )

    def ego(
        self,
        tick: int,
        t: float,
        ego: int,
        boxes: NDArray[np.float32],
        scores: NDArray[np.float32],
        num_gt: int,
        tp: dict[float, int],
        result: EgoResult | None,
    ) -> None:
        """One ego's tick: its receptions, its detections and its frames row (``result`` None
        when it failed: no detections, ``ego_ok`` False)."""
        receptions = result.receptions if result is not None else ()
        for r in receptions:
            self.rows["receptions"].append(
                {
                    "tick": tick,
                    "t": t,
                    "ego": ego,
                    "seq": r.seq,
                    "sender": r.sender,
                    "t_send": r.t_send,
                    "age_s": r.age_s,
                    "stale": r.t_send < t - EPS_S,
                    "status": r.status,
                    "error": r.error,
                    "held": r.held,
                }
            )
        for box, score in zip(boxes, scores, strict=True):
            self.rows["detections"].append(
                {
                    "tick": tick,
                    "t": t,
                    "ego": ego,
                    "score": float(score),
                    **dict(
                        zip(("x", "y", "z", "l", "w", "h", "yaw"), map(float, box), strict=True)
                    ),
                }
            )
        fused = [r for r in receptions if r.status == "fused"]
        self.rows["frames"].append(
            {
                "tick": tick,
                "t": t,
                "ego": ego,
                "ego_ok": result is not None,
                "num_det": len(scores),
                "num_gt": num_gt,
                "tp@0.3": tp[0.3],
                "tp@0.5": tp[0.5],
                "tp@0.7": tp[0.7],
                "received": len(receptions),
                "fused": len(fused),
                "stale_fused": sum(1 for r in fused if r.t_send < t - EPS_S),
                "codec_errors": sum(1 for r in receptions if r.status in REFUSED_STATUSES),
                "refine_gamma": math.nan if result is None else result.gamma,
                "refine_steps": 0 if result is None else result.refine_steps,
                "fused_wire_bytes": sum(self.wire_of.get(r.seq, 0) for r in fused),
            }
        )

    def abandon(self, tick: int) -> None:
        """Forget the rows and failures of ``tick`` and later (an unfinished tick)."""
        for name, rows in self.rows.items():
            self.rows[name] = [r for r in rows if r["tick"] < tick]
        self.events = [e for e in self.events if e["tick"] < tick]

    def tables(self) -> dict[str, pa.Table]:
        """Every table so far, by name."""
        return {
            name: pa.Table.from_pylist(self.rows[name], schema=schema)
            for name, schema in SCHEMAS.items()
        }
