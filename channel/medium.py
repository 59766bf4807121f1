"""A shared broadcast medium: who is on the air when, CSMA-style (timing only, no payloads).

Every vehicle has a transmit queue of ONE message (age of information: a newer message
replaces an unsent older one, as ETSI's Collective Perception message generation does). A
queued message goes on the air when its sender wins the medium:

    idle_from = max(queued at, sender's own last end, end of the last transmission
                    heard within carrier_sense_m)
    start     = idle_from + aifs_s + backoff * slot_s          (backoff ~ U{0..cw}, seeded)

The sender with the earliest ``start`` transmits; every other sender that hears it freezes
its back-off with the slots it has already counted down (802.11 DCF/EDCA) and tries again
when that transmission ends. Two senders whose starts fall in the same slot both transmit
(an 802.11 collision); senders that cannot hear each other (beyond ``carrier_sense_m``)
transmit in parallel (hidden terminals). Who then receives what is decided by
:mod:`channel.broadcast`, which sees the overlaps this module records.

Air time of a message of ``B`` wire bytes cut into ``n = ceil(B / max_frame_bytes)`` frames
at ``R`` Mbps (each frame carries its own PHY preamble and MAC header; the frames of one
message follow each other ``sifs_s`` apart after one channel access, like an 802.11 fragment
burst)::

    air = n * (phy_overhead_s + 8 * frame_header_bytes / (R * 1e6))
          + 8 * B / (R * 1e6) + (n - 1) * sifs_s

Simplifications (stated, not hidden): one channel access per message rather than per frame;
OFDM symbol padding and service/tail bits are ignored (< 1 symbol per frame); a station
always backs off (post-back-off), even when it finds the medium idle; broadcast frames are
never acknowledged or retransmitted, so the contention window stays at ``cw``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from channel.links import id_key
from configkit import Float, Int, config_dataclass

# Two starts closer than this are the same instant (sums of tick and slot times).
TIME_EPS_S = 1e-9
XY = tuple[float, float]


NonNegative = Annotated[Float, Field(ge=0.0)]


@config_dataclass
class MediumConfig:
    """How transmitters share the air; the defaults are a medium with no overheads that every
    transmitter hears (with an unlimited bandwidth, every message takes no air time)."""

    carrier_sense_m: NonNegative | None = None  # None: every transmitter hears every other
    # payload bytes per frame; None: one frame per message
    max_frame_bytes: Int | None = Field(None, ge=1)
    frame_header_bytes: Int = Field(0, ge=0)  # MAC header + FCS + LLC, per frame
    phy_overhead_s: NonNegative = 0.0  # PHY preamble + signal field, per frame
    sifs_s: NonNegative = 0.0  # gap between the frames of one message
    aifs_s: NonNegative = 0.0  # idle time a station senses before counting down its back-off
    slot_s: NonNegative = 0.0
    cw: Int = Field(0, ge=0)  # back-off drawn uniformly from 0..cw slots

    def frames(self, wire_bytes: int) -> int:
        """Frames a message of ``wire_bytes`` is cut into (at least one)."""
        if self.max_frame_bytes is None:
            return 1
        return max(1, math.ceil(int(wire_bytes) / int(self.max_frame_bytes)))

    def air_time(self, wire_bytes: int, rate_mbps: float | None) -> float:
        """Seconds on the air for a message of ``wire_bytes`` (0 when the rate is unlimited)."""
        if rate_mbps is None:
            return 0.0
        n = self.frames(wire_bytes)
        bps = float(rate_mbps) * 1e6
        return (
            n * (self.phy_overhead_s + 8.0 * self.frame_header_bytes / bps)
            + 8.0 * int(wire_bytes) / bps
            + (n - 1) * self.sifs_s
        )

    def hears(self, a: XY, b: XY) -> bool:
        """Whether a transmitter at ``a`` senses one at ``b`` busy."""
        return self.carrier_sense_m is None or math.dist(a, b) <= self.carrier_sense_m


@dataclass
class Transmission:
    """One broadcast: queued at ``t_send``; ``start``/``end`` once on the air.

    ``status``: ``queued`` (waiting for the medium), ``sent`` (has started; on the air until
    ``end``) or ``replaced`` (a newer message from the same sender took its place unsent).
    ``meta`` is for the layer above (listeners, bytes, pose noise).
    """

    seq: int
    sender: int
    t_send: float
    wire_bytes: int
    frames: int
    air_s: float
    sender_xy: XY
    backoff_slots: int = 0
    start: float | None = None
    end: float | None = None
    status: str = "queued"
    meta: Any = None


class Medium:
    """The CSMA scheduler: submit messages, advance simulated time, read the air."""

    def __init__(
        self, config: MediumConfig | None = None, rate_mbps: float | None = None, seed: int = 0
    ) -> None:
        self.config = config or MediumConfig()
        self.rate_mbps = rate_mbps
        self.seed = int(seed)
        self.clock = -math.inf
        self.positions: dict[int, XY] = {}
        self.transmissions: list[Transmission] = []  # in submit order (seq)
        self.on_air: list[Transmission] = []  # started, in start order
        self._queue: dict[int, Transmission] = {}  # sender -> its one queued message
        self._backoff: dict[int, int] = {}  # sender -> slots left for its queued message
        self._last_end: dict[int, float] = {}  # sender -> end of its latest transmission
        self._rngs: dict[int, np.random.Generator] = {}
        self.max_air_s = 0.0

    def _rng(self, sender: int) -> np.random.Generator:
        rng = self._rngs.get(sender)
        if rng is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(3, id_key(sender)))
            rng = self._rngs[sender] = np.random.default_rng(seq)
        return rng

    def set_positions(self, positions: dict[int, XY]) -> None:
        """Current world x, y of every node (carrier sense uses them from now on)."""
        self.positions.update({int(k): (float(v[0]), float(v[1])) for k, v in positions.items()})

    def submit(
        self, sender: int, t_send: float, wire_bytes: int, meta: Any = None
    ) -> tuple[Transmission, Transmission | None]:
        """Queue a message; returns it and the unsent message it replaced (or None).

        Runs the medium up to ``t_send`` first, so a message that started before is not
        replaced. ``t_send`` must not be earlier than the medium's clock.
        """
        sender = int(sender)
        self.advance(t_send)
        old = self._queue.pop(sender, None)
        if old is not None:
            old.status = "replaced"  # the back-off counter is the station's: it carries on
        xy = self.positions.get(sender, (0.0, 0.0))
        tx = Transmission(
            len(self.transmissions),
            sender,
            float(t_send),
            int(wire_bytes),
            self.config.frames(wire_bytes),
            self.config.air_time(wire_bytes, self.rate_mbps),
            xy,
            meta=meta,
        )
        if sender not in self._backoff:
            self._backoff[sender] = int(self._rng(sender).integers(0, self.config.cw + 1))
        tx.backoff_slots = self._backoff[sender]
        self.transmissions.append(tx)
        self._queue[sender] = tx
        return tx, old

    def _idle_from(self, tx: Transmission) -> float:
        busy = self._last_end.get(tx.sender, -math.inf)
        me = self.positions.get(tx.sender, tx.sender_xy)
        for other, end in self._last_end.items():
            if (
                end > busy
                and other != tx.sender
                and self.config.hears(me, self.positions.get(other, (0.0, 0.0)))
            ):
                busy = end
        return max(tx.t_send, busy)

    def advance(self, until: float) -> list[Transmission]:
        """Put on the air every queued message that wins the medium before ``until``;
        returns them in start order. ``until`` earlier than the clock is an error."""
        until = float(until)
        if until < self.clock - TIME_EPS_S:
            raise ValueError(f"the medium is at t={self.clock}; cannot go back to {until}")
        cfg = self.config
        started: list[Transmission] = []
        while self._queue:
            idle = {s: self._idle_from(tx) for s, tx in sorted(self._queue.items())}
            starts = {s: idle[s] + cfg.aifs_s + self._backoff[s] * cfg.slot_s for s in idle}
            first = min(starts.values())
            if first >= until - TIME_EPS_S:
                break
            winners = [s for s, c in starts.items() if c <= first + TIME_EPS_S]
            for s in starts:  # those who hear a winner freeze what is left of their back-off
                if s in winners or cfg.slot_s <= 0:
                    continue
                me = self.positions.get(s, self._queue[s].sender_xy)
                if any(cfg.hears(me, self._queue[w].sender_xy) for w in winners):
                    counted = math.floor((first - idle[s] - cfg.aifs_s) / cfg.slot_s + TIME_EPS_S)
                    self._backoff[s] -= min(max(counted, 0), self._backoff[s])
            for s in winners:
                tx = self._queue.pop(s)
                del self._backoff[s]  # a fresh draw for the next message
                tx.start, tx.end, tx.status = first, first + tx.air_s, "sent"
                self._last_end[s] = tx.end
                self.max_air_s = max(self.max_air_s, tx.air_s)
                self.on_air.append(tx)
                started.append(tx)
        self.clock = max(self.clock, until)
        return started

    def queued(self) -> list[Transmission]:
        """Messages waiting for the medium, by sender."""
        return [self._queue[s] for s in sorted(self._queue)]

    def overlapping(self, tx: Transmission, index: int | None = None) -> list[Transmission]:
        """Other transmissions on the air at some instant of ``tx``'s air time (only those
        started so far: call when ``clock >= tx.end`` for the complete answer)."""
        if tx.start is None or tx.end is None:
            return []
        i = self.on_air.index(tx) if index is None else index
        out: list[Transmission] = []
        j = i - 1
        while j >= 0 and self.on_air[j].start >= tx.start - self.max_air_s - TIME_EPS_S:
            other = self.on_air[j]
            if other.end > tx.start + TIME_EPS_S:
                out.append(other)
            j -= 1
        j = i + 1
        while j < len(self.on_air) and self.on_air[j].start < tx.end - TIME_EPS_S:
            out.append(self.on_air[j])
            j += 1
        return out


__all__ = ["TIME_EPS_S", "Medium", "MediumConfig", "Transmission"]
