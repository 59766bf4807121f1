"""NaN and inf (and absurd finite numbers) where a finite value is required: PCD points, an
OPV2V pose, a scenario value, a run config value. One ``error:`` line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.malformed import assert_one_error_line, cosim, ego_files, opv2v_folder
from tests.scenario_files import write_scenario


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return opv2v_folder(tmp_path)


def test_nan_point_in_pcd(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcd, _ = ego_files(folder)
    lines = pcd.read_text().splitlines()
    header_end = next(i for i, line in enumerate(lines) if line.startswith("DATA")) + 1
    x, y, z, rgb = lines[header_end + 5].split()
    lines[header_end + 5] = f"nan {y} {z} {rgb}"
    lines[header_end + 9] = f"{x} inf {z} {rgb}"
    pcd.write_text("\n".join(lines) + "\n")
    code, out = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert_one_error_line(
        code,
        out,
        f"{pcd}: 2 point(s) with NaN/inf x, y, z or intensity "
        "(first at point 5); every point must be finite",
    )


@pytest.mark.parametrize("value", [".nan", ".inf", "1.0e+308"])
def test_bad_lidar_pose_in_frame_yaml(
    folder: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, yml = ego_files(folder)
    text = yml.read_text()
    start = text.index("lidar_pose:\n- ") + len("lidar_pose:\n- ")
    end = text.index("\n", start)
    yml.write_text(text[:start] + value + text[end:])
    code, out = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert code == 2 and len(out) == 1, out
    assert out[0].startswith(f"error: {yml}: lidar_pose: ")
    assert ("non-finite value" if value != "1.0e+308" else "is not a pose on a map") in out[0]


@pytest.mark.parametrize(
    ("key", "value", "low", "high"),
    [("range", ".nan", 1.0, 500.0), ("rotation_frequency", "-.inf", 1.0, 100.0)],
)
def test_nan_in_scenario_file(
    tmp_path: Path,
    key: str,
    value: str,
    low: float,
    high: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_scenario(tmp_path / "s.yaml")
    text = path.read_text()
    start = text.index(f"  {key}: ") + len(f"  {key}: ")
    path.write_text(text[:start] + value + text[text.index("\n", start) :])
    code, out = cosim(["scenarios", "inspect", path], capsys)
    shown = "nan" if value == ".nan" else "-inf"
    assert_one_error_line(
        code,
        out,
        f"{path}: lidar.{key}: must be a finite number "
        f"(allowed: >= {low} and <= {high}), got {shown}",
    )


def test_nan_deadline_in_run_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("frames: 2\nfusion_deadline_s: .nan\n")
    code, out = cosim(["run", "--config", path, "--executor", "inprocess"], capsys)
    assert_one_error_line(
        code,
        out,
        f"{path}: fusion_deadline_s: must be a finite number (allowed: > 0.0 or null), got nan",
    )


def test_negative_deadline_in_run_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("fusion_deadline_s: -1\n")
    code, out = cosim(["run", "--config", path, "--executor", "inprocess"], capsys)
    assert_one_error_line(code, out, f"{path}: fusion_deadline_s: must be > 0.0 or null, got -1")
