"""``cosim config schema`` / ``check``: every kind's schema, every shipped file, and bad values
named by file, key path and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosim.cli.app import app
from cosim.cli.config_kinds import KINDS, detect_kind

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {
    "run": sorted((ROOT / "configs" / "run").glob("*.yaml")),
    "train": sorted((ROOT / "configs" / "train").rglob("*.yaml")),
    "model": sorted((ROOT / "models" / "configs").glob("*.yaml")),
    "scenario": sorted((ROOT / "scenarios" / "builtin").glob("*.yaml")),
    "channel": sorted((ROOT / "channel" / "presets").glob("*.yaml")),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_prints_json_with_unknown_keys_forbidden(kind: str) -> None:
    result = runner.invoke(app, ["config", "schema", kind])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["additionalProperties"] is False and schema["properties"]


def test_schema_of_an_unknown_kind_names_the_kinds() -> None:
    result = runner.invoke(app, ["config", "schema", "weather"])
    assert result.exit_code == 2
    assert "unknown config kind 'weather'" in result.output and "scenario" in result.output


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_every_shipped_file_checks_ok_as_its_kind(kind: str) -> None:
    files = SHIPPED[kind]
    assert files, kind
    result = runner.invoke(app, ["config", "check", *map(str, files)])
    assert result.exit_code == 0, result.output
    for path in files:
        assert f"{path}: {kind} ok" in result.output


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_shipped_files_are_recognised_by_their_keys_alone(kind: str, tmp_path: Path) -> None:
    for path in SHIPPED[kind]:
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        assert detect_kind(copy) == kind, path


# (kind, file text, key path, what is allowed / the problem): a wrong type, a value out of
# range and an unknown key for every kind.
BAD = [
    ("scenario", None, "traffic.connected", "must be >= 2 and <= 7, got 9"),
    ("channel", "loss: {model: bernoulli, p: 1.5}\n", "loss.p", "must be >= 0.0 and <= 1.0"),
    ("channel", "latency: {jitter: gaussian}\n", "latency.jitter", "must be 'none', 'uniform'"),
    ("channel", "medium: {cw_min: 3}\n", "medium", "unknown key(s) ['cw_min']; known keys"),
    ("codec", "dtype: bfloat16\n", "dtype", "must be 'float32', 'float16' or 'int8'"),
    ("codec", "dtype: int8\nzstd_level: 30\n", "zstd_level", "must be >= -7 and <= 22, got 30"),
    ("codec", "dtype: int8\nlevel: 3\n", "", "unknown key(s) ['level']"),
    (
        "model",
        "fusion: max\nhead:\n  anchors: [{name: car}, {name: truck, size: [1, 2, 0]}]\n",
        "head.anchors[1].size[2]",
        "must be > 0.0, got 0",
    ),
    (
        "model",
        "fusion: max\nmax_neighbours: 2.5\n",
        "max_neighbours",
        "must be a valid integer (allowed: >= 0), got 2.5",
    ),
    ("model", "fusion: max\nhead: {nms_thresh: 0.1}\n", "head", "unknown key(s) ['nms_thresh']"),
    ("train", None, "optimizer.name", "must be 'adamw' or 'adam', got 'sgd'"),
    ("run", "frames: 0\n", "frames", "must be >= 1 or null, got 0"),
    ("run", "channel: dsrc\nall_egos: 3\n", "all_egos", "must be a valid boolean, got 3"),
    ("run", "channel: dsrc\nframe: 3\n", "", "unknown key(s) ['frame']"),
]


def _bad_file(tmp_path: Path, kind: str, text: str | None) -> Path:
    path = tmp_path / f"bad_{kind}.yaml"
    if text is None and kind == "scenario":
        text = (ROOT / "scenarios" / "builtin" / "intersection.yaml").read_text()
        text = text.replace("connected: 4 ", "connected: 9 ")
    if text is None and kind == "train":
        text = (ROOT / "configs" / "train" / "cpu_max.yaml").read_text()
        text = text.replace("name: adamw", "name: sgd")
    assert text is not None
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("kind", "text", "key", "allowed"),
    BAD,
    ids=[f"{b[0]}-{b[2] or 'top'}-{i}" for i, b in enumerate(BAD)],
)
def test_a_bad_value_names_the_file_the_key_path_and_what_is_allowed(
    tmp_path: Path, kind: str, text: str | None, key: str, allowed: str
) -> None:
    path = _bad_file(tmp_path, kind, text)
    result = runner.invoke(app, ["config", "check", str(path), "--kind", kind])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    where = f"{path}: {key}: " if key else f"{path}: "
    assert f"error: {where}{allowed}" in line, line
    guessed = runner.invoke(app, ["config", "check", str(path)])
    assert guessed.exit_code == 2 and f"{where}{allowed}" in " ".join(guessed.output.split())


def test_check_reports_every_file_and_fails_if_one_is_bad(tmp_path: Path) -> None:
    bad = _bad_file(tmp_path, "run", "frames: 0\n")
    good = SHIPPED["run"][0]
    result = runner.invoke(app, ["config", "check", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"{good}: run ok" in result.output and f"{bad}: frames" in result.output


def test_check_of_a_file_of_no_known_kind(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("colour: blue\n")
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and "cannot tell which config kind" in result.output
