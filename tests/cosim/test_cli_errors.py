"""The cosim entry point: an error escaping a command is one ``error:`` line (exit 2 for bad
input, 1 for a bug), and ``cosim --debug`` re-raises it so the traceback shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.cli.errors import error_exit_code, one_line
from scenarios.opv2v_yaml import OPV2VFormatError
from tests.adversarial.malformed import cosim, ego_files, opv2v_folder


@pytest.fixture()
def broken_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = opv2v_folder(tmp_path, encoding="binary")
    pcd, _ = ego_files(folder)
    pcd.write_bytes(pcd.read_bytes()[:-16])
    return folder, pcd


def test_error_line_without_debug(
    broken_folder: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, pcd = broken_folder
    code, lines = cosim(["scenarios", "inspect", folder, "--frame", "0"], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {pcd}: ")
    assert "Traceback" not in "\n".join(lines)


def test_debug_shows_the_exception(broken_folder: tuple[Path, Path]) -> None:
    from cosim.cli.app import app

    folder, _ = broken_folder
    with pytest.raises(OPV2VFormatError, match="binary body truncated"):
        app(["--debug", "scenarios", "inspect", str(folder), "--frame", "0"], prog_name="cosim")


def test_one_line_and_exit_codes() -> None:
    assert one_line(ValueError("a\nb   c")) == "a b c"
    assert len(one_line(ValueError("x" * 5000))) == 500
    assert one_line(KeyError("lidar_pose")) == "missing key 'lidar_pose'"
    assert error_exit_code(ValueError()) == error_exit_code(OSError()) == 2
    assert error_exit_code(RuntimeError()) == 1
