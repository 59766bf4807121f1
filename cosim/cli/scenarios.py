"""``cosim scenarios ...``: list, inspect, render and export frame sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cosim.cli.errors import print_error
from cosim.common.progress import progress_bar
from scenarios.frame import Frame
from scenarios.geometry import matrix_to_pose
from scenarios.source import FrameSource, close_source, open_source
from scenarios.synthetic import SyntheticSource

app = typer.Typer(
    no_args_is_help=True, help="Built-in scenarios and OPV2V data: list, inspect, render, export."
)
console = Console()

SourceArg = Annotated[
    str,
    typer.Argument(help="Built-in scenario name, scenario YAML, or OPV2V/V2XSet scenario folder."),
]
SeedOpt = Annotated[int | None, typer.Option(help="Override the scenario's seed (synthetic).")]
AgentsOpt = Annotated[
    int | None,
    typer.Option("--agents", help="Override the number of connected vehicles (synthetic)."),
]


def load_source(
    source: str, seed: int | None = None, agents: int | None = None, frames: int | None = None
) -> FrameSource:
    """Open a source for the CLI, turning every loading error into a one-line message."""
    try:
        return open_source(source, seed=seed, num_cavs=agents, num_frames=frames)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print_error(console, error)
        raise typer.Exit(2) from error


def frame_or_exit(source: FrameSource, index: int) -> Frame:
    if not 0 <= index < source.num_frames:
        print_error(console, f"--frame {index} is outside 0..{source.num_frames - 1}")
        raise typer.Exit(2)
    return source.frame(index)


def frame_summary(frame: Frame, max_range: float = 100.0) -> dict[str, Any]:
    """The ``inspect --json`` object: agents with OPV2V poses, objects near the ego."""
    ids, boxes = frame.objects_in(max_range=max_range)
    return {
        "timestamp": round(float(frame.timestamp), 6),
        "ego": int(frame.ego_id),
        "agents": [
            {
                "id": int(agent.agent_id),
                "lidar_pose": [round(float(v), 6) for v in matrix_to_pose(agent.lidar_pose)],
                "num_points": int(agent.points.shape[0]),
            }
            for agent in frame.agents.values()
        ],
        "objects": [
            {"id": int(i), "box_ego": [round(float(v), 6) for v in box]}
            for i, box in zip(ids, boxes, strict=True)
        ],
    }


@app.command("list")
def list_scenarios() -> None:
    """The built-in scenarios, one line each."""
    from scenarios.scenario_file import list_builtin

    table = Table("name", "description")
    for name, description in list_builtin().items():
        table.add_row(name, description)
    console.print(table)


@app.command()
def inspect(
    source: SourceArg,
    frame: Annotated[int, typer.Option("--frame", help="Frame index.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seed: SeedOpt = None,
    agents: AgentsOpt = None,
) -> None:
    """Agents, poses, point counts and ground truth (ego frame, within 100 m) of one frame."""
    loaded = load_source(source, seed, agents)
    try:
        summary = frame_summary(frame_or_exit(loaded, frame))
    finally:
        close_source(loaded)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(
        f"[bold]{loaded.name}[/bold]: {loaded.num_frames} frames at "
        f"{loaded.rate_hz:g} Hz; frame {frame} at t = {summary['timestamp']} s, "
        f"ego {summary['ego']}"
    )
    agents_table = Table("agent", "x", "y", "z", "roll", "yaw", "pitch", "points")
    for agent in summary["agents"]:
        agents_table.add_row(
            str(agent["id"]), *(f"{v:.2f}" for v in agent["lidar_pose"]), str(agent["num_points"])
        )
    console.print(agents_table)
    objects_table = Table(
        "object",
        "x",
        "y",
        "z",
        "l",
        "w",
        "h",
        "yaw",
        title="ground truth in the ego frame (within 100 m)",
    )
    for obj in summary["objects"]:
        objects_table.add_row(str(obj["id"]), *(f"{v:.2f}" for v in obj["box_ego"]))
    console.print(objects_table)


@app.command()
def render(
    source: SourceArg,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    frame: Annotated[int, typer.Option("--frame", help="Frame index.")] = 0,
    seed: SeedOpt = None,
    agents: AgentsOpt = None,
    view_range: Annotated[float, typer.Option(help="Half-width of the picture, metres.")] = 100.0,
    corruption: Annotated[
        str | None,
        typer.Option(
            help="Apply a sensor corruption to every agent's points, or 'all' for a grid of the "
            "seven."
        ),
    ] = None,
    severity: Annotated[int, typer.Option(min=1, max=3, help="Corruption severity.")] = 2,
    corruption_seed: Annotated[int, typer.Option(help="Seed of the corruption.")] = 0,
) -> None:
    """A BEV picture: each agent's points in its own colour, ground-truth boxes, agents."""
    from cosim.common.render import render_corruption_grid, render_frame

    loaded = load_source(source, seed, agents)
    try:
        chosen = frame_or_exit(loaded, frame)
    finally:
        close_source(loaded)
    title = f"{loaded.name}  frame {frame}"
    lidar = loaded.scenario.lidar if isinstance(loaded, SyntheticSource) else None
    try:
        if corruption == "all":
            render_corruption_grid(chosen, out, severity, corruption_seed, title, view_range, lidar)
        else:
            render_frame(
                chosen, out, title, view_range, corruption, severity, corruption_seed, lidar
            )
    except ValueError as error:
        print_error(console, error)
        raise typer.Exit(2) from error
    console.print(f"wrote {out}")


@app.command()
def export(
    source: SourceArg,
    out: Annotated[Path, typer.Option("--out", help="Scenario folder to write (OPV2V layout).")],
    frames: Annotated[int, typer.Option("--frames", min=1, help="Number of frames.")] = 10,
    seed: SeedOpt = None,
    agents: AgentsOpt = None,
) -> None:
    """Write frames in OPV2V format (one folder per CAV, .pcd + .yaml per frame)."""
    from scenarios.opv2v_writer import write_opv2v

    loaded = load_source(source, seed, agents, frames)
    count = min(frames, loaded.num_frames)
    with progress_bar(console) as progress:
        simulate = progress.add_task(f"read {loaded.name}", total=count)
        collected = []
        try:
            for item in loaded.frames(0, count):
                collected.append(item)
                progress.advance(simulate)
        finally:
            close_source(loaded)
        write = progress.add_task(f"write {out}", total=count)
        try:
            write_opv2v(collected, out, on_frame_written=lambda _: progress.advance(write))
        except (ValueError, FileExistsError) as error:
            print_error(console, error)
            raise typer.Exit(2) from error
    points = [a.points.shape[0] for a in collected[0].agents.values()]
    console.print(
        f"wrote {count} frames to {out} ({len(points)} agents, "
        f"{int(np.mean(points))} points per agent in frame 0)"
    )


def register(root: typer.Typer) -> None:
    """Add the ``scenarios`` command group to the ``cosim`` app."""
    root.add_typer(app, name="scenarios")
