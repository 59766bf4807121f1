"""Checkpoints: identical outputs after a round trip, plain payloads, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import FORMAT_VERSION, checkpoint_bytes, load_checkpoint, save_checkpoint
from models.detector import build_detector
from models.detector_config import DetectorConfig


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = DetectorConfig(name="tiny_max", fusion="max", max_neighbours=2)
    model = build_detector(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    clouds = [
        np.c_[
            rng.uniform(-30, 30, (2000, 2)), rng.uniform(-2, 0, 2000), rng.uniform(0, 1, 2000)
        ].astype(np.float32)
        for _ in range(2)
    ]
    # One training step so BatchNorm running stats and Adam state are not the defaults.
    model.encode(clouds).square().mean().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "run" / "best.pt",
        model,
        config,
        {"ap50": np.float64(0.625), "per_iou": np.array([0.7, 0.6])},
        optimizer_state=opt.state_dict(),
        epoch=3,
        extra={"seed": 7},
    )
    loaded, loaded_config, payload = load_checkpoint(path)
    assert loaded_config == config and not loaded.training
    assert payload["metrics"] == {"ap50": 0.625, "per_iou": [0.7, 0.6]}
    assert payload["epoch"] == 3 and payload["extra"] == {"seed": 7}
    assert payload["format_version"] == FORMAT_VERSION
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(payload["optimizer_state"])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(clouds), model.encode(clouds), rtol=0, atol=0)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt"):
        load_checkpoint(text)
    other = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="weights.pt.*format tag"):
        load_checkpoint(other)


def test_save_rejects_mismatched_config_and_unplain_metrics(tmp_path: Path) -> None:
    model = build_detector(DetectorConfig(name="a", fusion="none"))
    with pytest.raises(ValueError, match="not the model's config"):
        save_checkpoint(tmp_path / "x.pt", model, DetectorConfig(name="b", fusion="none"), {})
    with pytest.raises(TypeError, match="metrics.when"):
        save_checkpoint(tmp_path / "x.pt", model, model.config, {"when": object()})
    assert not (tmp_path / "x.pt").exists()


def test_checkpoint_bytes_carry_the_overridden_config(tmp_path: Path) -> None:
    """``cosim run --message-range`` ships the same weights under the overridden config."""
    torch.manual_seed(0)
    config = DetectorConfig(name="tiny_max", fusion="max", fuse_at="encoder")
    model = build_detector(config)
    path = save_checkpoint(tmp_path / "m.pt", model, config, {})
    assert checkpoint_bytes(path) == path.read_bytes()
    wide = [-80.0, -80.0, 80.0, 80.0]
    blob = checkpoint_bytes(path, {"message_range": wide})
    shipped = tmp_path / "shipped.pt"
    shipped.write_bytes(blob)
    loaded, loaded_config, _ = load_checkpoint(shipped)
    assert loaded_config.message_range == tuple(wide)
    assert loaded.message_shape == (32, 400, 400)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="message_range"):
        checkpoint_bytes(path, {"message_range": [-40.0, -80.0, 80.0, 80.0]})


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "models" / "checkpoints").rglob("*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_configs_validate_to_the_values_they_store(path: Path) -> None:
    """The config saved in each shipped checkpoint passes the pydantic schema and reads back
    to the very values stored (older files lack keys added since, e.g. message_range)."""
    stored = torch.load(path, map_location="cpu", weights_only=True)["config"]
    again = DetectorConfig.from_dict(stored, str(path)).to_dict()
    assert {k: again[k] for k in stored} == stored
