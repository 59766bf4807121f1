"""Presets load from package data, carry the documented numbers, and reject unknown keys."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from channel.pose_error import PoseErrorConfig
from channel.presets import ChannelConfig, list_presets, load_preset


def _raw(name: str) -> dict:
    return yaml.safe_load((resources.files("channel") / "presets" / f"{name}.yaml").read_text())


def test_all_presets_load() -> None:
    assert list_presets() == ["bursty", "congested", "cv2x", "dsrc", "ideal"]
    for name in list_presets():
        cfg = load_preset(name)
        assert cfg.description and cfg.pose_error.std_xy_m == 0.0


def test_preset_numbers() -> None:
    ideal = load_preset("ideal")
    assert ideal.link.bandwidth_mbps is None and ideal.max_age_s is None
    assert ideal.link.range.max_m is None and ideal.link.loss.stationary_loss() == 0.0
    dsrc = load_preset("dsrc")
    assert dsrc.link.bandwidth_mbps == 6.0 and dsrc.link.range.max_m == 300.0
    lat = dsrc.link.latency
    assert (lat.base_s, lat.base_s + lat.jitter_s) == pytest.approx((0.02, 0.1))
    bursty = load_preset("bursty").link.loss
    assert bursty.model == "gilbert_elliott"
    assert bursty.stationary_loss() == pytest.approx(0.158333, abs=1e-5)
    assert 1 / bursty.p_bg == 4.0
    assert load_preset("congested").link.loss.p == 0.10
    assert load_preset("cv2x").link.latency.jitter == "lognormal"


def test_unknown_keys_are_named() -> None:
    data = _raw("dsrc")
    with pytest.raises(ValueError, match=r"preset x: unknown key\(s\) \['bandwidth'\]"):
        ChannelConfig.from_dict({**data, "bandwidth": 6}, where="preset x")
    with pytest.raises(ValueError, match=r"range: unknown key\(s\) \['max'\]"):
        ChannelConfig.from_dict({**data, "range": {"max": 3}})
    with pytest.raises(ValueError, match=r"latency: unknown key\(s\) \['jiter'\]"):
        ChannelConfig.from_dict({**data, "latency": {"jiter": "uniform"}})
    with pytest.raises(ValueError, match=r"pose_error: unknown key\(s\) \['std'\]"):
        ChannelConfig.from_dict({**data, "pose_error": {"std": 0.2}})
    with pytest.raises(ValueError, match="max_age_s"):
        ChannelConfig.from_dict({**data, "max_age_s": -1})
    with pytest.raises(ValueError, match="unknown channel preset 'wifi'"):
        load_preset("wifi")


def test_config_builds_queue_and_pose_model() -> None:
    cfg = load_preset("congested").with_pose_error(PoseErrorConfig.level(0.6))
    assert cfg.pose_error.std_yaw_deg == 0.6 and cfg.link == load_preset("congested").link
    queue = cfg.make_queue(seed=1)
    assert queue.max_age_s == 0.3 and queue.link.config.bandwidth_mbps == 3.0
    assert cfg.make_pose_model(seed=1).config.std_xy_m == 0.6


def test_presets_share_the_medium_with_documented_overheads() -> None:
    dsrc = load_preset("dsrc").medium
    assert (dsrc.slot_s, dsrc.sifs_s, dsrc.aifs_s, dsrc.cw) == (13e-6, 32e-6, 110e-6, 15)
    assert (dsrc.max_frame_bytes, dsrc.frame_header_bytes, dsrc.carrier_sense_m) == (
        1500,
        36,
        300.0,
    )
    # A 39,192-byte message (int8, top 10%) = 27 frames: 27 x 88 us + 52,256 us + 26 x 32 us.
    assert dsrc.air_time(39_192, 6.0) == pytest.approx((27 * 88 + 52_256 + 26 * 32) * 1e-6)
    assert load_preset("cv2x").medium.slot_s == 0.001
    assert load_preset("ideal").medium.air_time(10**6, None) == 0.0
    with pytest.raises(ValueError, match=r"medium: unknown key\(s\) \['cw_min'\]"):
        ChannelConfig.from_dict({**_raw("dsrc"), "medium": {"cw_min": 15}})
