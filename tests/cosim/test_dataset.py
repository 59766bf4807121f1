"""Building a dataset once to Parquet shards and reading it back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cosim.cli.dataset import app, parse_seeds
from cosim.training.dataset_build import build_dataset, dataset_info
from models.dataset import FORMAT_VERSION, DatasetFormatError, FrameStore, shard_paths
from scenarios.opv2v import OPV2VScenario
from scenarios.opv2v_writer import write_opv2v
from scenarios.synthetic import SyntheticSource
from tests.scenario_files import TINY_TRAFFIC, write_scenario


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The intersection with 10 vehicles, 3 connected and an 8-channel, 1,600-ray LiDAR."""
    return write_scenario(tmp_path_factory.mktemp("scenario") / "tiny.yaml", traffic=TINY_TRAFFIC)


@pytest.fixture(scope="module")
def built(tiny_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "train"
    calls: list[tuple[int, int]] = []
    build_dataset(
        tiny_yaml,
        5,
        out,
        seeds=[0, 1],
        frames_per_shard=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (10, 10) and len(calls) == 10
    return out


def test_frames_read_back_equal_to_the_source(tiny_yaml: Path, built: Path) -> None:
    store = FrameStore(built)
    assert store.num_frames == 10
    for position, seed in ((0, 0), (5, 1)):
        source = SyntheticSource.from_scenario(tiny_yaml, num_frames=5, seed=seed)
        for k, expected in enumerate(source.frames()):
            stored = store.frame(position + k)
            assert stored == expected  # points, poses, speeds, boxes, categories, hits: exact
            assert stored.agents[1].points.dtype == np.float32
    assert store.frame_sources[0] == "tiny/0" and store.frame_sources[9] == "tiny/1"
    assert [len(a) for a in store.frame_agents] == [3] * 10


def test_manifest_records_sources_shards_and_command(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["grid_independent"] is True
    assert manifest["scenarios"] == ["tiny"] and manifest["seeds"] == [0, 1]
    assert manifest["num_frames"] == 10
    assert [s["frames"] for s in manifest["shards"]] == [4, 4, 2]  # bounded shards
    assert [(s["seed"], s["frames"], s["first_frame_id"]) for s in manifest["sources"]] == [
        (0, 5, 0),
        (1, 5, 5),
    ]
    assert "build_dataset(" in manifest["command"] and "seeds=[0, 1]" in manifest["command"]
    for shard in manifest["shards"]:
        agents, objects = shard_paths(built, shard["name"])
        assert pq.ParquetFile(agents).num_row_groups == shard["frames"]
        assert pq.ParquetFile(agents).metadata.row_group(0).column(0).compression == "ZSTD"
        assert shard["bytes"] == agents.stat().st_size + objects.stat().st_size


def test_same_seed_same_bytes_other_seed_other_data(tiny_yaml: Path, tmp_path: Path) -> None:
    build_dataset(tiny_yaml, 2, tmp_path / "a", seeds=[3])
    build_dataset(tiny_yaml, 2, tmp_path / "b", seeds=[3])
    build_dataset(tiny_yaml, 2, tmp_path / "c", seeds=[4])
    for name in ("shard-00000.agents.parquet", "shard-00000.objects.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a, c = FrameStore(tmp_path / "a").frame(1), FrameStore(tmp_path / "c").frame(1)
    assert not np.array_equal(a.objects.boxes, c.objects.boxes)


def test_every_keeps_a_stride_of_frames(tiny_yaml: Path, tmp_path: Path) -> None:
    manifest = build_dataset(tiny_yaml, 5, tmp_path / "d", seeds=[0], every=2)
    store = FrameStore(tmp_path / "d")
    assert manifest["num_frames"] == 3
    assert [store.frame(k).index for k in range(3)] == [0, 2, 4]


def test_opv2v_folder_as_a_source(tiny_yaml: Path, tmp_path: Path) -> None:
    frames = list(SyntheticSource.from_scenario(tiny_yaml, num_frames=2, seed=0).frames())
    folder = write_opv2v(frames, tmp_path / "opv2v" / "scene_a")
    build_dataset(folder.parent, None, tmp_path / "e")  # a split folder of scenarios
    store, replay = FrameStore(tmp_path / "e"), OPV2VScenario(folder)
    assert store.num_frames == 2
    assert [store.frame(k) for k in range(2)] == list(replay.frames())
    assert store.frame(0).objects.hits == {}
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["sources"][0]["kind"] == "opv2v" and manifest["seeds"] == []
    with pytest.raises(ValueError, match="synthetic scenarios only"):
        build_dataset(folder, None, tmp_path / "f", num_cavs=2)


def test_bad_inputs_name_the_file(built: Path, tiny_yaml: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError, match="not empty"):
        build_dataset(tiny_yaml, 2, built)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset("nowhere", 2, tmp_path / "x")
    manifest = json.loads((built / "manifest.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DatasetFormatError, match=r"manifest\.json: format_version 99"):
        FrameStore(bad)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    for name in ("shard-00000", "shard-00001", "shard-00002"):
        for path in shard_paths(built, name):
            (bad / path.name).write_bytes(path.read_bytes())
    table = pq.read_table(bad / "shard-00001.agents.parquet").drop_columns(["speed"])
    pq.write_table(table, bad / "shard-00001.agents.parquet")
    with pytest.raises(DatasetFormatError, match=r"shard-00001\.agents\.parquet: .*'speed'"):
        FrameStore(bad)


def test_info_and_cli(built: Path, tiny_yaml: Path, tmp_path: Path) -> None:
    info = dataset_info(built)
    assert info["frames"] == 10 and info["agent_rows"] == 30 and info["shards"] == 3
    assert 1000 < info["points_per_agent"]["mean"] < 1700
    assert info["objects_per_frame"]["min"] == 12  # 10 moving + 2 parked
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "build",
            "--scenario",
            str(tiny_yaml),
            "--frames",
            "2",
            "--seeds",
            "5,6",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [5, 6] and manifest["command"].startswith("cosim dataset build")
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["frames"] == 4
    assert runner.invoke(app, ["info", str(tmp_path)]).exit_code == 2
    assert parse_seeds("0,1,3-5,1") == [0, 1, 3, 4, 5]
