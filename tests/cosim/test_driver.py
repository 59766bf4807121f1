"""The driver with the in-process executor: late, lost, too-old and undecodable messages, all
egos, and the bookkeeping between the channel log, the egos' receptions and the summary."""

from pathlib import Path

import numpy as np
import pytest

import agents.steps
from cosim.driver import SimulationResult, run_simulation
from cosim.run_config import RunConfig
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
        frames=6, channel="ideal", executor="inprocess", render_frames=0,
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
    assert fused and all(r["stale"] and r["age_s"] == pytest.approx(0.1) for r in fused)
    assert m["stale_fused"] == len(fused) == sum(result.frames.column("stale_fused").to_pylist())
    # The last tick's messages are still in the air when the run ends.
    assert m["in_flight_at_end"] > 0
    assert m["sent"] == m["delivered"] + m["lost"] + m["too_old"] + m["in_flight_at_end"]


def test_messages_past_the_maximum_age_are_dropped(base: RunConfig) -> None:
    channel = {**LATE_AND_LOSSY, "loss": {"model": "none"}, "max_age_s": 0.15}
    result = run_simulation(base.replace(channel=channel))
    m = result.summary["messages"]
    assert m["too_old"] > 0 and m["fused"] == m["delivered"] == 0
    assert result.receptions.num_rows == 0


def test_undecodable_messages_are_skipped(
    base: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message truncated on the way: the egos log codec errors and detect alone."""
    encode = agents.steps.encode_feature

    def truncated(*args: object, **kwargs: object) -> bytes:
        return encode(*args, **kwargs)[:-7]

    alone = run_simulation(base.replace(cooperate=False))
    assert alone.summary["messages"]["sent"] == 0
    monkeypatch.setattr(agents.steps, "encode_feature", truncated)
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
