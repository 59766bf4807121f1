"""``cosim run [SCENARIO]``: one co-simulation, a rich progress bar, a summary table, a run folder.

Register on the main app with ``cli_run.register(app)``. Every option defaults to "not given":
the value then comes from ``--config FILE`` (a RunConfig YAML, e.g. ``configs/run/*.yaml`` or a
previous run's ``config.yaml``), else from :class:`~cosim.sim.run_config.RunConfig`'s default.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cosim.cli.errors import print_error
from cosim.cli.options import RefineNeighbours, RefineSkipAbove, RefineSteps
from cosim.common.interrupts import EXIT_INTERRUPTED, graceful_stop
from cosim.common.progress import progress_bar
from cosim.sim.run_config import RunConfig, parse_sparsity
from scenarios.safe_yaml import load_yaml_file

console = Console()


def _channel(value: str) -> str | dict[str, Any]:
    """A preset name, or a channel YAML file (ChannelConfig.from_dict keys)."""
    path = Path(value)
    if value.endswith((".yaml", ".yml")) and path.is_file():
        data = load_yaml_file(path) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a channel file must be a mapping")
        return dict(data)
    return value


def build_config(config_file: Path | None, **options: Any) -> RunConfig:
    """The run's config: the file's values, overridden by the options that were given."""
    base = RunConfig.from_yaml(config_file) if config_file else RunConfig()
    given = {k: v for k, v in options.items() if v is not None}
    if "sparsity" in given:
        given["sparsity"] = parse_sparsity(given["sparsity"])
    if "channel" in given:
        given["channel"] = _channel(given["channel"])
    if "checkpoint" in given:
        given["checkpoint"] = str(given["checkpoint"])
    if "severity" in given and given.get("corruption", base.corruption) is None:
        raise ValueError(
            f"--severity {given['severity']} needs --corruption NAME "
            "(a severity without a corruption would be recorded but do nothing)"
        )
    return dataclasses.replace(base, **given)


def execute(config: RunConfig, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Run with a progress bar, write the run folder, print the table; returns the summary."""
    from cosim.sim.driver import Simulation
    from cosim.sim.outputs import summary_table, write_run

    simulation = Simulation(config)
    with graceful_stop() as stop:
        with progress_bar(console, disable=quiet, transient=True) as progress:
            task = progress.add_task("simulating frames", total=simulation.num_ticks)
            result = simulation.run(progress=lambda _tick: progress.advance(task), should_stop=stop)
        write_run(result, out, simulation.detector.grid)
    if not quiet:
        console.print(summary_table(result.summary))
        console.print(f"run directory: [bold]{out}[/bold]")
    if result.summary.get("interrupted"):
        console.print(
            f"interrupted ({stop.name or 'SIGINT'}): wrote the "
            f"{result.summary['frames']} complete tick(s) of "
            f"{result.summary['frames_planned']} to {out}",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    return result.summary


def run(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="built-in scenario, scenario YAML or OPV2V folder [default: intersection]"
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="detector checkpoint; its config decides the fusion and so the message: a BEV "
            "map (none, intermediate), points (early) or boxes (late) "
            "[default: models/checkpoints/diffkd.pt]"
        ),
    ] = None,
    agents: Annotated[int | None, typer.Option(help="connected vehicles (synthetic)")] = None,
    frames: Annotated[int | None, typer.Option(help="ticks to simulate [default: 20]")] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="preset (ideal, dsrc, cv2x, congested, bursty) or YAML [default: dsrc]"),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="map codec value type: float32, float16, int8 [default: int8]"),
    ] = None,
    sparsity: Annotated[
        str | None,
        typer.Option(help="map sparsity: none, topk:FRACTION or threshold:T [default: topk:0.006]"),
    ] = None,
    zstd_level: Annotated[
        int | None, typer.Option(help="zstd level of every message, -7..22 [default: 3]")
    ] = None,
    corruption: Annotated[str | None, typer.Option(help="sensor corruption name")] = None,
    severity: Annotated[int | None, typer.Option(help="severity 1-3 [default: 2]")] = None,
    pose_error: Annotated[
        float | None,
        typer.Option(help="pose error sigma (m on x/y, deg on yaw), replaces the channel's"),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of the world, channel, noise [default: 3]")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="connect to a Ray cluster: auto, host:6379, ray://host:10001")
    ] = None,
    connect_timeout: Annotated[
        float | None, typer.Option(help="seconds to wait for --address to answer [default: 30]")
    ] = None,
    metrics: Annotated[
        bool | None,
        typer.Option(
            "--metrics/--no-metrics",
            help="let a local Ray instance export Prometheus metrics [default: off]",
        ),
    ] = None,
    executor: Annotated[str | None, typer.Option(help="ray or inprocess [default: ray]")] = None,
    all_egos: Annotated[
        bool | None, typer.Option("--all-egos/--one-ego", help="every vehicle fuses and is scored")
    ] = None,
    cooperate: Annotated[
        bool | None,
        typer.Option("--cooperate/--no-cooperate", help="--no-cooperate: nothing sent, ego alone"),
    ] = None,
    max_restarts: Annotated[
        int | None, typer.Option(help="Ray restarts of a dead vehicle actor [default: 1]")
    ] = None,
    render: Annotated[int | None, typer.Option(help="BEV pictures to draw [default: 3]")] = None,
    refine_steps: RefineSteps = None,
    refine_neighbours: RefineNeighbours = None,
    refine_skip_above: RefineSkipAbove = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="vehicles' models on auto (a GPU when the cluster or machine has one), cpu or "
            "cuda [default: auto]"
        ),
    ] = None,
    gpus_per_vehicle: Annotated[
        float | None,
        typer.Option(
            help="GPU fraction each vehicle actor asks Ray for when the device is cuda "
            "[default: 0.25]"
        ),
    ] = None,
    message_range: Annotated[
        str | None,
        typer.Option(
            help="window each vehicle encodes and sends, x_min,y_min,x_max,y_max in m "
            "(e.g. --message-range=-80,-80,80,80) [default: the checkpoint's]"
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="RunConfig YAML to start from")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory [default: runs/<time>]")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar or table")] = False,
) -> None:
    """Simulate cooperative perception over a V2X channel and score the ego's detections."""
    from cosim.sim.outputs import default_run_dir

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        resolved = build_config(
            config,
            scenario=scenario,
            checkpoint=checkpoint,
            agents=agents,
            frames=frames,
            channel=channel,
            dtype=dtype,
            sparsity=sparsity,
            zstd_level=zstd_level,
            corruption=corruption,
            severity=severity,
            pose_error=pose_error,
            seed=seed,
            address=address,
            connect_timeout_s=connect_timeout,
            metrics=metrics,
            executor=executor,
            all_egos=all_egos,
            cooperate=cooperate,
            max_restarts=max_restarts,
            render_frames=render,
            refine_steps=refine_steps,
            refine_neighbours=refine_neighbours,
            refine_skip_above=refine_skip_above,
            device=device,
            gpus_per_vehicle=gpus_per_vehicle,
            message_range=message_range,
        )
        execute(resolved, out or default_run_dir(), quiet)
    except (FileNotFoundError, ValueError) as err:
        print_error(console, err)
        raise typer.Exit(2) from err


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``cosim`` app."""
    app.command("run")(run)
