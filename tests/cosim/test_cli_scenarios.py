"""``cosim scenarios`` end to end on a small synthetic scenario and a written OPV2V folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cosim.cli.app import app
from scenarios.opv2v import OPV2VScenario
from scenarios.synthetic import SyntheticSource
from tests.scenario_files import write_scenario

runner = CliRunner()


@pytest.fixture(scope="module")
def small_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in intersection with a sparse LiDAR and few frames, to keep tests fast."""
    return write_scenario(
        tmp_path_factory.mktemp("scenario") / "small.yaml",
        name="small_intersection",
        duration_s=0.5,
        channels=16,
        points_per_second=57_600,
    )


def test_list_names_every_builtin() -> None:
    result = runner.invoke(app, ["scenarios", "list"])
    assert result.exit_code == 0, result.output
    for name in ("intersection", "highway", "t_junction"):
        assert name in result.output


def test_inspect_json_matches_the_frame(small_scenario: Path) -> None:
    result = runner.invoke(
        app, ["scenarios", "inspect", str(small_scenario), "--frame", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    frame = SyntheticSource.from_scenario(small_scenario).frame(2)
    assert summary["timestamp"] == pytest.approx(0.2)
    assert summary["ego"] == frame.ego_id
    assert [a["id"] for a in summary["agents"]] == frame.agent_ids
    assert [a["num_points"] for a in summary["agents"]] == [
        a.points.shape[0] for a in frame.agents.values()
    ]
    ids, boxes = frame.objects_in(max_range=100.0)
    assert [o["id"] for o in summary["objects"]] == ids.tolist()
    np.testing.assert_allclose([o["box_ego"] for o in summary["objects"]], boxes, atol=1e-5)
    assert all(np.hypot(*o["box_ego"][:2]) <= 100.0 for o in summary["objects"])
    assert frame.ego_id not in [o["id"] for o in summary["objects"]]


def test_render_writes_png(small_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "bev.png"
    result = runner.invoke(
        app, ["scenarios", "render", str(small_scenario), "--frame", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_corruption_grid(small_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app,
        [
            "scenarios",
            "render",
            str(small_scenario),
            "--out",
            str(out),
            "--corruption",
            "all",
            "--severity",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


def test_export_then_inspect_opv2v(small_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "opv2v" / "scenario_a"
    result = runner.invoke(
        app, ["scenarios", "export", str(small_scenario), "--frames", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    written = OPV2VScenario(out)
    source = SyntheticSource.from_scenario(small_scenario)
    assert written.num_frames == 3
    assert written.frame(2).agent_ids == source.frame(2).agent_ids
    np.testing.assert_allclose(
        written.frame(2).agent(1).points[:, :3], source.frame(2).agent(1).points[:, :3]
    )
    result = runner.invoke(app, ["scenarios", "inspect", str(out), "--frame", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["timestamp"] == pytest.approx(0.1)


def test_bad_inputs_exit_with_a_message(small_scenario: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["scenarios", "inspect", "no_such_scenario"])
    assert result.exit_code == 2
    assert "no_such_scenario" in result.output
    result = runner.invoke(app, ["scenarios", "inspect", str(small_scenario), "--frame", "99"])
    assert result.exit_code == 2
    assert "--frame 99" in result.output
    result = runner.invoke(
        app,
        [
            "scenarios",
            "render",
            str(small_scenario),
            "--out",
            str(tmp_path / "x.png"),
            "--corruption",
            "snow",
        ],
    )
    assert result.exit_code == 2
    assert "snow" in result.output
