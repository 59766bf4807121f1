"""YAML alias bombs ("billion laughs") in a scenario file, an OPV2V frame, a run, training or
detector config are refused at the first alias, in milliseconds, with one ``error:`` line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.adversarial.malformed import cosim, ego_files, opv2v_folder

BOMB = "".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)]
)


def _check(code: int, out: list[str], path: Path, started: float) -> None:
    assert time.perf_counter() - started < 5.0
    assert code == 2 and len(out) == 1, out
    assert out[0].startswith(f"error: {path}")
    assert "YAML aliases (*name) are not allowed in this file" in out[0]


def test_alias_bomb_in_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + BOMB)
    started = time.perf_counter()
    code, out = cosim(["scenarios", "inspect", path], capsys)
    _check(code, out, path, started)


def test_alias_bomb_in_opv2v_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = opv2v_folder(tmp_path)
    _, yml = ego_files(folder)
    yml.write_text(yml.read_text() + BOMB)
    started = time.perf_counter()
    code, out = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    _check(code, out, yml, started)


def test_alias_bomb_in_run_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(BOMB)
    started = time.perf_counter()
    code, out = cosim(["run", "--config", path, "--executor", "inprocess"], capsys)
    _check(code, out, path, started)


def test_alias_bomb_in_training_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(BOMB)
    started = time.perf_counter()
    code, out = cosim(["train", path], capsys)
    _check(code, out, path, started)


def test_alias_bomb_in_detector_config(tmp_path: Path) -> None:
    from models.detector_config import DetectorConfig

    path = tmp_path / "det.yaml"
    path.write_text("name: x\n" + BOMB)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="YAML aliases") as err:
        DetectorConfig.from_yaml(path)
    assert time.perf_counter() - started < 5.0 and str(path) in str(err.value)
