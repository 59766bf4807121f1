"""Truncated files: a cut PCD body, a cut frame YAML, a cut scenario file and a cut
checkpoint each give one ``error:`` line naming the file, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.malformed import cosim, ego_files, opv2v_folder
from tests.agents.helpers import write_tiny_checkpoint


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return opv2v_folder(tmp_path, encoding="binary")


def test_truncated_binary_pcd(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcd, _ = ego_files(folder)
    raw = pcd.read_bytes()
    pcd.write_bytes(raw[: len(raw) - 100])
    code, lines = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {pcd}: binary body truncated: ")
    assert "bytes, need " in lines[0]


def test_truncated_frame_yaml(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, yml = ego_files(folder)
    text = yml.read_text()
    yml.write_text(text[: text.index("vehicles:") + 20])
    code, lines = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {yml}")


def test_truncated_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cut.yaml"
    path.write_text("name: cut\nmap: {layout: intersection, arm_length: 1")
    code, lines = cosim(["scenarios", "inspect", path], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}: not valid YAML: ")


def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tiny_checkpoint(tmp_path / "tiny.pt")
    path.write_bytes(path.read_bytes()[:1000])
    code, lines = cosim(["run", "--checkpoint", path, "--executor", "inprocess"], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path} is not a detector checkpoint: ")
