"""Size mismatches: a binary PCD whose header says fewer (or more) points than its body
holds, and a checkpoint whose weights do not fit its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import read_checkpoint
from tests.adversarial.malformed import assert_one_error_line, cosim, ego_files, opv2v_folder
from tests.agents.helpers import write_tiny_checkpoint


def _set_points(pcd: Path, count: int) -> int:
    raw = pcd.read_bytes()
    end = raw.index(b"DATA binary\n")
    header = raw[:end].decode()
    real = int(header.split("POINTS ")[1].split()[0])
    header = header.replace(f"WIDTH {real}", f"WIDTH {count}").replace(
        f"POINTS {real}", f"POINTS {count}"
    )
    pcd.write_bytes(header.encode() + raw[end:])
    return real


def test_header_says_fewer_points_than_the_body_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = opv2v_folder(tmp_path, encoding="binary")
    pcd, _ = ego_files(folder)
    real = _set_points(pcd, 100)
    code, out = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert_one_error_line(
        code,
        out,
        f"{pcd}: binary body holds {16 * real} bytes ({real} "
        f"points); header says 100 points x 16 bytes = 1600",
    )


def test_header_says_more_points_than_the_body_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = opv2v_folder(tmp_path, encoding="binary")
    pcd, _ = ego_files(folder)
    real = _set_points(pcd, 10**6)
    code, out = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert_one_error_line(
        code, out, f"{pcd}: binary body truncated: {16 * real} bytes, need {16 * 10**6}"
    )


def test_checkpoint_weights_of_the_wrong_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tiny_checkpoint(tmp_path / "tiny.pt")
    payload = read_checkpoint(path)
    state = dict(payload["state_dict"])
    state["features.encoder.layers.0.linear.weight"] = torch.zeros(3, 3)
    torch.save({**payload, "state_dict": state}, path)
    code, out = cosim(["run", "--checkpoint", path, "--executor", "inprocess"], capsys)
    assert_one_error_line(
        code,
        out,
        f"{path}: weights do not fit config 'tiny': size mismatch for "
        "features.encoder.layers.0.linear.weight: copying a param with shape "
        "torch.Size([3, 3]) from checkpoint, the shape in current model is torch.Size([8, 9]).",
    )
