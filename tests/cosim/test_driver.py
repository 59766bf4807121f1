"""The driver with the in-process executor: late, lost, too-old and undecodable messages, all
egos, and the bookkeeping between the channel log, the egos' receptions and the summary."""

import json
from pathlib import Path

import numpy as np
import pytest

import agents.payloads
from cosim.sim.driver import run_simulation
from cosim.sim.outputs import write_run
from cosim.sim.results import SimulationResult
from cosim.sim.run_config import RunConfig
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint

LATE_AND_LOSSY = {
    "latency": {"base_s": 0.15, "jitter": "none"},  # over one tick: every message is stale
    "loss": {"model": "bernoulli", "p": 0.3},
    "max_age_s": 0.25,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    root = tmp_path_factory.mktemp("driver")
    return RunConfig(
        scenario=str(write_small_scenario(root / "small.yaml")),
        checkpoint=str(write_tiny_checkpoint(root / "tiny.pt")),
        frames=6,
        channel="ideal",
        executor="inprocess",
        render_frames=0,
        seed=0,  # the placements below (who is within comm range) are seed 0's
    )


def _fused_senders(result: SimulationResult) -> set[int]:
    rows = result.receptions.to_pylist()
    return {r["sender"] for r in rows if r["status"] == "fused"}


def test_ideal_channel_fuses_every_fresh_message(base: RunConfig) -> None:
    result = run_simulation(base)
    s = result.summary
    m = s["messages"]
    assert s["frames"] == 6 and result.frames.num_rows == 6
    assert m["sent"] == 6 * 2 == result.messages.num_rows
    assert m["delivered"] == m["sent"] and m["lost"] == m["too_old"] == 0
    assert m["late_delivered"] == 0 and m["latency_s"]["p99"] == 0.0
    # agent 3 is 45 m from the ego, agent 2 beyond the 70 m comm range.
    assert _fused_senders(result) == {3}
    assert m["fused"] == 6 and result.frames.column("fused").to_pylist() == [1] * 6
    assert 0 < m["mean_wire_bytes"] < m["mean_raw_bytes"]
    assert result.detections.num_rows == sum(result.frames.column("num_det").to_pylist()) > 0
    assert not np.isnan(s["ap@0.5"])
    assert s["failures"] == [] and s["lost_vehicles"] == []


def test_late_and_lost_messages(base: RunConfig) -> None:
    result = run_simulation(base.replace(channel=LATE_AND_LOSSY, seed=1))
    m = result.summary["messages"]
    log = result.messages.to_pylist()
    lost = [r for r in log if r["dropped"] == "lost"]
    assert m["lost"] == len(lost) > 0
    latencies = [r["t_arrival"] - r["t_send"] for r in log if r["t_arrival"] is not None]
    assert min(latencies) > 0.1  # over one tick
    fused = [r for r in result.receptions.to_pylist() if r["status"] == "fused"]
    fresh = [r for r in fused if not r["held"]]
    held = [r for r in fused if r["held"]]
    assert fresh and all(r["stale"] and r["age_s"] == pytest.approx(0.1) for r in fresh)
    # A map whose successor was lost is fused again a tick later, 0.2 s old (max age 0.25).
    assert held and all(r["age_s"] == pytest.approx(0.2) for r in held)
    assert m["held_fused"] == len(held) and 0.1 < m["fused_age_s"]["p99"] <= 0.2 + 1e-9
    assert m["stale_fused"] == len(fused) == sum(result.frames.column("stale_fused").to_pylist())
    # The last tick's messages are still in the air when the run ends.
    assert m["in_flight_at_end"] > 0
    assert m["sent"] == m["delivered"] + m["lost"] + m["too_old"] + m["in_flight_at_end"]
    assert m["collision"] == m["out_of_range"] == 0


def test_messages_past_the_maximum_age_are_dropped(base: RunConfig) -> None:
    channel = {**LATE_AND_LOSSY, "loss": {"model": "none"}, "max_age_s": 0.15}
    result = run_simulation(base.replace(channel=channel))
    m = result.summary["messages"]
    assert m["too_old"] > 0 and m["fused"] == m["delivered"] == 0
    assert result.receptions.num_rows == 0


def test_undecodable_messages_are_skipped(base: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message truncated on the way: the egos log codec errors and detect alone."""
    encode = agents.payloads.encode_feature

    def truncated(*args: object, **kwargs: object) -> bytes:
        return encode(*args, **kwargs)[:-7]

    alone = run_simulation(base.replace(cooperate=False))
    assert alone.summary["messages"]["sent"] == 0
    monkeypatch.setattr(agents.payloads, "encode_feature", truncated)
    result = run_simulation(base)
    m = result.summary["messages"]
    statuses = set(result.receptions.column("status").to_pylist())
    assert statuses == {"codec_error"} and m["codec_errors"] == m["delivered"] == 12
    assert "truncated" in result.receptions.column("error")[0].as_py()
    assert result.detections.equals(alone.detections)


def test_all_egos_mode(base: RunConfig) -> None:
    result = run_simulation(base.replace(all_egos=True, frames=3))
    frames = result.frames.to_pylist()
    assert sorted({f["ego"] for f in frames}) == [1, 2, 3] and len(frames) == 9
    log = result.messages.to_pylist()
    assert len(log) == 3 * 3 * 2  # N (N - 1) links per tick
    assert {(r["sender"], r["receiver"]) for r in log} == {
        (s, r) for s in (1, 2, 3) for r in (1, 2, 3) if s != r
    }
    assert set(result.detections.column("ego").to_pylist()) <= {1, 2, 3}


def test_missing_checkpoint_is_a_clear_error(base: RunConfig, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found.*--checkpoint"):
        run_simulation(base.replace(checkpoint=str(tmp_path / "nope.pt")))


def test_all_egos_with_seven_vehicles_broadcast_once_each(tmp_path: Path) -> None:
    """7 vehicles, every one an ego, on dsrc with dense float32 maps (more than 6 Mbps carries
    in a tick): 7 broadcasts queued per tick (not 7 x 6 links), each received by the 6 others;
    the summary reports the medium's busy ratio and what collisions and age cost."""
    config = RunConfig(
        scenario=str(write_small_scenario(tmp_path / "seven.yaml", connected=7)),
        checkpoint=str(write_tiny_checkpoint(tmp_path / "tiny.pt")),
        frames=4,
        channel="dsrc",
        dtype="float32",
        sparsity=None,
        executor="inprocess",
        all_egos=True,
        render_frames=0,
    )
    result = run_simulation(config)
    medium = result.summary["medium"]
    txs = result.transmissions.to_pylist()
    assert medium["queued"] == len(txs) == 7 * 4
    assert [sum(t["t_send"] == pytest.approx(0.1 * k) for t in txs) for k in range(4)] == [7] * 4
    on_air = [t for t in txs if t["status"] == "sent"]
    assert len(on_air) == medium["transmissions"]
    done = [t for t in on_air if t["t_end"] <= 0.4 + 1e-9]  # left the air by the run's end
    log = result.messages.to_pylist()
    assert len(log) == 6 * len(done) and {r["tx"] for r in log} == {t["tx"] for t in done}
    assert medium["replaced"] > 0  # saturated: newer maps replaced unsent ones
    busy = result.busy.to_pylist()
    assert len(busy) == 7 * 4 and medium["busy_ratio"]["max"] > 0.9
    out = write_run(result, tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    m = summary["messages"]
    assert {"collision", "too_old", "held_fused"} <= set(m)
    assert {"busy_ratio", "replaced", "transmissions_per_tick"} <= set(summary["medium"])
    assert m["sent"] == (
        m["delivered"]
        + m["lost"]
        + m["out_of_range"]
        + m["collision"]
        + m["too_old"]
        + m["in_flight_at_end"]
    )
    assert (out / "transmissions.parquet").is_file() and (out / "channel_busy.parquet").is_file()


def test_a_fusion_deadline_past_one_tick_is_refused(base: RunConfig) -> None:
    with pytest.raises(ValueError, match="fusion_deadline_s must be in"):
        run_simulation(base.replace(fusion_deadline_s=0.15))
