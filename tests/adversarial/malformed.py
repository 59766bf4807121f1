"""Helpers of the malformed-input tests: run ``cosim`` through its console entry point (the
error-reporting app) and collect its output lines; write a one-frame OPV2V folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.cli.app import app
from scenarios.opv2v_writer import write_opv2v
from scenarios.source import open_source
from tests.scenario_files import TINY_TRAFFIC, write_scenario


def cosim(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit code and non-empty output lines (stdout + stderr) of ``cosim ARGS``."""
    with pytest.raises(SystemExit) as stop:
        app([str(a) for a in args], prog_name="cosim")
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    code = stop.value.code
    return (code if isinstance(code, int) else 1), lines


def assert_one_error_line(code: int, lines: list[str], expected: str) -> None:
    """Exit code 2 and exactly one line, ``error: <expected>`` (no traceback)."""
    assert code == 2, lines
    assert lines == [f"error: {expected}"], lines


def opv2v_folder(root: Path, encoding: str = "ascii") -> Path:
    """One frame of a tiny scenario written as an OPV2V scenario folder."""
    scenario = write_scenario(root / "tiny.yaml", traffic=TINY_TRAFFIC)
    frames = list(open_source(scenario, num_frames=1).frames(0, 1))
    return write_opv2v(frames, root / "opv2v" / "test" / "tiny", encoding=encoding)


def ego_files(folder: Path) -> tuple[Path, Path]:
    """The ego CAV's (pcd, yaml) of frame 0."""
    ego = min((p for p in folder.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    return ego / "000000.pcd", ego / "000000.yaml"
