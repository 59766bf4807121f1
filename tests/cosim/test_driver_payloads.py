"""Early and late fusion checkpoints in ``cosim run``: points and boxes broadcast over the shared
medium with their real wire size, logged per transmission, reception and frame like maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosim.sim.driver import run_simulation
from cosim.sim.results import SimulationResult
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulationResult]:
    root = tmp_path_factory.mktemp("driver_payloads")
    base = RunConfig(
        scenario=str(write_small_scenario(root / "small.yaml")),
        frames=3,
        channel="dsrc",
        executor="inprocess",
        render_frames=0,
    )
    return {
        fusion: run_simulation(
            base.replace(checkpoint=str(write_tiny_checkpoint(Path(root) / f"{fusion}.pt", fusion)))
        )
        for fusion in ("early", "late")
    }


def test_points_and_boxes_travel_with_their_wire_size(runs: dict[str, SimulationResult]) -> None:
    early, late = runs["early"], runs["late"]
    assert (early.summary["payload"], late.summary["payload"]) == ("points", "boxes")
    assert early.summary["codec"] is None and late.summary["codec"] is None  # no map codec
    for result in (early, late):
        tx = result.transmissions.to_pylist()
        assert len(tx) == 3 * 3  # three vehicles broadcast every tick
        assert sum(r["listeners"] for r in tx) == 3 * 2  # the ego hears the other two
        m = result.summary["messages"]
        assert m["fused"] > 0 and m["codec_errors"] == 0
        # The frames table carries what the ego fused, byte for byte.
        log = {r["seq"]: r["wire_bytes"] for r in result.messages.to_pylist()}
        fused = [r for r in result.receptions.to_pylist() if r["status"] == "fused"]
        assert (
            sum(result.frames.column("fused_wire_bytes").to_pylist())
            == sum(log[r["seq"]] for r in fused)
            > 0
        )
    points = early.transmissions.column("wire_bytes").to_numpy()
    boxes = late.transmissions.column("wire_bytes").to_numpy()
    # 16-beam sweeps of ~5k points: ~7 bytes a point before zstd; boxes: 32 bytes each.
    assert 5_000 < np.median(points) < 60_000 and 200 < np.median(boxes) < 1_000
    assert early.summary["messages"]["wire_bytes"]["p50"] == pytest.approx(
        np.median(early.messages.column("wire_bytes").to_numpy())
    )
    raw = early.transmissions.column("raw_bytes").to_numpy()
    assert (raw % 16 == 0).all() and (raw > 2 * points).all()  # float32 (N, 4) is 16 B a point


def test_air_time_follows_the_real_wire_size(runs: dict[str, SimulationResult]) -> None:
    """802.11p at 6 Mbps, 1,500-byte frames: a points message takes tens of ms on the air,
    a boxes message about one frame's time."""
    medium = RunConfig().channel_config().medium
    for result in runs.values():
        for r in result.transmissions.to_pylist():
            if r["status"] == "sent":
                assert r["air_s"] == pytest.approx(medium.air_time(r["wire_bytes"], 6.0))
                assert r["frames"] == medium.frames(r["wire_bytes"])
    early_air = np.median(runs["early"].transmissions.column("air_s").to_numpy())
    late_air = np.median(runs["late"].transmissions.column("air_s").to_numpy())
    assert early_air > 20 * late_air
