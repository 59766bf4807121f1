"""The interface every frame source implements (synthetic world, OPV2V replay, CARLA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from scenarios.frame import Frame


@runtime_checkable
class FrameSource(Protocol):
    """A finite, replayable sequence of Frames.

    ``frame(i)`` returns the i-th frame (0-based); asking twice gives equal Frames.
    ``frames(start, stop)`` iterates in order and is the cheap way to read a run of frames.
    """

    @property
    def name(self) -> str: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def rate_hz(self) -> float: ...

    def frame(self, index: int) -> Frame: ...

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]: ...


def open_source(
    spec: str | Path,
    *,
    seed: int | None = None,
    num_cavs: int | None = None,
    num_frames: int | None = None,
) -> FrameSource:
    """Open a built-in scenario name, a scenario YAML file, an OPV2V/V2XSet scenario folder, or
    a live CARLA server (``carla://host:2000?town=Town05&cavs=4``; needs the ``carla`` extra).

    ``seed``, ``num_cavs`` and ``num_frames`` override a synthetic scenario's settings; a
    recorded dataset has fixed content, so they are rejected there (``num_frames`` excepted:
    it only caps how many frames are read by callers).
    """
    from scenarios.scenario_file import BUILTIN_SCENARIOS
    from scenarios.synthetic import SyntheticSource

    text = str(spec)
    if text.startswith("carla://"):
        from scenarios.carla_source import CarlaSource, parse_carla_url

        settings = parse_carla_url(text, seed=seed, num_cavs=num_cavs, num_frames=num_frames)
        return CarlaSource(settings)
    path = Path(text)
    if text in BUILTIN_SCENARIOS or (path.suffix in {".yaml", ".yml"} and path.is_file()):
        return SyntheticSource.from_scenario(
            text if text in BUILTIN_SCENARIOS else path,
            seed=seed,
            num_cavs=num_cavs,
            num_frames=num_frames,
        )
    if path.is_dir():
        from scenarios.opv2v import OPV2VScenario

        if seed is not None or num_cavs is not None:
            raise ValueError(f"{path}: --seed and --agents apply to synthetic scenarios only")
        return OPV2VScenario(path)
    raise FileNotFoundError(
        f"{text!r} is neither a built-in scenario ({', '.join(sorted(BUILTIN_SCENARIOS))}), "
        "a scenario YAML file, nor an OPV2V scenario folder"
    )


def is_recorded_source(spec: str | Path) -> bool:
    """True for a recorded dataset folder (OPV2V/V2XSet), whose frames no seed changes."""
    from scenarios.scenario_file import BUILTIN_SCENARIOS

    text = str(spec)
    return not text.startswith("carla://") and text not in BUILTIN_SCENARIOS and Path(text).is_dir()


def close_source(source: FrameSource) -> None:
    """Release what a source holds (a CARLA server's settings and actors); a no-op otherwise."""
    close = getattr(source, "close", None)
    if callable(close):
        close()
