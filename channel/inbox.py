"""A receiver's age-of-information buffer: the newest decodable message per sender.

Cooperative perception fuses the latest view it has of each neighbour, not only what arrived
in the last tick: a map that arrived two ticks ago is still worth fusing (placed with the pose
its sender reported at send time) until it is older than the channel's maximum age. The
receiver therefore keeps, per sender, the newest message it could decode, replaces it when a
newer one decodes, and forgets it when it grows too old::

    inbox = ReceiveBuffer(max_age_s=0.5)
    inbox.offer(sender, seq, t_send, item)      # False: older than what is held
    for held in inbox.current(t_now):           # evicts the too old, sorted by sender
        use(held.item, age=t_now - held.t_send, fresh=held.seq in arrived_now)

The item is whatever the receiver made of the message (a decoded map, boxes, points): the
buffer never looks inside it, so every payload kind can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from channel.delivery import AGE_EPS_S

T = TypeVar("T")


@dataclass(frozen=True)
class Held(Generic[T]):
    """One sender's newest decodable message."""

    sender: int
    seq: int
    t_send: float
    item: T


class ReceiveBuffer(Generic[T]):
    """Per sender, the newest decodable message while younger than ``max_age_s`` (None: no
    limit). "Newest" is the latest send time, then the higher channel sequence number."""

    def __init__(self, max_age_s: float | None = None) -> None:
        if max_age_s is not None and not max_age_s >= 0:
            raise ValueError(f"max_age_s must be >= 0 or None, got {max_age_s}")
        self.max_age_s = max_age_s
        self._held: dict[int, Held[T]] = {}

    def offer(self, sender: int, seq: int, t_send: float, item: T) -> bool:
        """Keep ``item`` if it is newer than the one held for ``sender``; returns whether."""
        held = self._held.get(int(sender))
        if held is not None and (held.t_send, held.seq) >= (float(t_send), int(seq)):
            return False
        self._held[int(sender)] = Held(int(sender), int(seq), float(t_send), item)
        return True

    def current(self, t_now: float) -> list[Held[T]]:
        """What is held at ``t_now``, by sender; messages older than the maximum age are
        forgotten first."""
        if self.max_age_s is not None:
            limit = self.max_age_s + AGE_EPS_S
            self._held = {s: h for s, h in self._held.items() if t_now - h.t_send <= limit}
        return [self._held[s] for s in sorted(self._held)]

    def __len__(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        self._held.clear()


__all__ = ["Held", "ReceiveBuffer"]
