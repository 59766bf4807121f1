"""The interface every frame source implements (synthetic world, OPV2V replay, CARLA)."""

from __future__ import annotations

from collections.abc import Iterator
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
