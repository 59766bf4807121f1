"""Wrong types and flags: run config ``frames: "abc"`` and ``frames: 2.5``, a scenario seed
that is a string, a checkpoint without weights, ``--severity`` without ``--corruption``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import read_checkpoint
from tests.adversarial.malformed import assert_one_error_line, cosim
from tests.agents.helpers import write_tiny_checkpoint
from tests.scenario_files import write_scenario


@pytest.mark.parametrize(("value", "shown"), [('"abc"', "'abc'"), ("2.5", "2.5"), ("true", "True")])
def test_run_config_frames_must_be_an_integer(
    tmp_path: Path, value: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"frames: {value}\n")
    code, out = cosim(["run", "--config", path, "--executor", "inprocess"], capsys)
    assert_one_error_line(
        code, out, f"{path}: frames: must be a valid integer (allowed: >= 1 or null), got {shown}"
    )


def test_run_config_that_is_not_a_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("- 1\n- 2\n")
    code, out = cosim(["run", "--config", path], capsys)
    assert_one_error_line(
        code, out, f"{path}: a run config must be a mapping, got a list of 2 item(s)"
    )


def test_scenario_seed_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_scenario(tmp_path / "s.yaml")
    text = path.read_text()
    start = text.index("\nseed: ") + len("\nseed: ")
    path.write_text(text[:start] + "abc" + text[text.index("\n", start) :])
    code, out = cosim(["scenarios", "inspect", path], capsys)
    assert_one_error_line(
        code,
        out,
        f"{path}: seed: must be a valid integer (allowed: >= 0 and <= 4294967295), got 'abc'",
    )


def test_checkpoint_without_state_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tiny_checkpoint(tmp_path / "tiny.pt")
    payload = read_checkpoint(path)
    del payload["state_dict"]
    torch.save(payload, path)
    code, out = cosim(["run", "--checkpoint", path, "--executor", "inprocess"], capsys)
    assert_one_error_line(code, out, f"{path}: checkpoint has no 'state_dict' of tensors")


def test_severity_without_corruption(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cosim(["run", "--severity", "9", "--executor", "inprocess"], capsys)
    assert_one_error_line(
        code,
        out,
        "--severity 9 needs --corruption NAME (a severity without "
        "a corruption would be recorded but do nothing)",
    )
