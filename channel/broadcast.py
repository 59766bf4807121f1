"""The broadcast channel: one transmission per sender per tick, one reception per listener.

:class:`BroadcastChannel` puts each message on the shared :class:`~channel.medium.Medium`
(one-message transmit queue per sender, CSMA air time) and, once the transmission has left
the air, decides for every listener separately whether it gets it:

1. ``out_of_range`` beyond the link's ``range.max_m`` (distance at the end of the
   transmission, sender where it was when it queued the message);
2. ``collision`` when another transmission overlapped it in time and its sender is within
   ``range.max_m`` of the listener (a hidden terminal, or two senders that drew the same
   back-off slot), or the listener was itself transmitting (half duplex). No capture effect:
   any overlap from an audible sender destroys the message at that listener;
3. ``lost`` by the link's own draw (reception fall-off with distance, Bernoulli or
   Gilbert-Elliott per directed link);

and otherwise it arrives ``latency`` (the link's base + jitter: stack and processing) after
the end of its air time. A receiver drops what is older than ``max_age_s`` on hand-over
(``too_old``). A message replaced in its sender's queue before it went on the air has no
receptions; :meth:`transmission_table` records it as ``replaced``.

Logs (pyarrow): :meth:`log_table` has one row per reception (:data:`channel.LOG_SCHEMA`, the
same schema as :class:`~channel.delivery.DeliveryQueue`), :meth:`transmission_table` one row
per message (:data:`TX_SCHEMA`) and :meth:`busy_table` the channel busy ratio seen around each
vehicle per tick (:data:`BUSY_SCHEMA`). Draws: back-off per sender (medium), reception per
directed link, so the same seed gives the same events whatever the payloads.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from channel.delivery import AGE_EPS_S, Delivery, LogRecord, ReceptionLog, message_size
from channel.links import LinkModel
from channel.medium import XY, Medium, MediumConfig, Transmission
from channel.pose_error import PoseNoise

TX_SCHEMA = pa.schema(
    [
        pa.field("tx", pa.int64(), nullable=False),
        pa.field("sender", pa.int64(), nullable=False),
        pa.field("t_send", pa.float64(), nullable=False),
        pa.field("wire_bytes", pa.int64(), nullable=False),
        pa.field("raw_bytes", pa.int64(), nullable=False),
        pa.field("frames", pa.int64(), nullable=False),
        pa.field("backoff_slots", pa.int64(), nullable=False),
        pa.field("t_start", pa.float64()),  # null: never went on the air
        pa.field("t_end", pa.float64()),
        pa.field("air_s", pa.float64(), nullable=False),
        pa.field("listeners", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # sent | replaced | queued_at_end
    ]
)
BUSY_SCHEMA = pa.schema(
    [
        pa.field("t", pa.float64(), nullable=False),  # start of the tick window
        pa.field("vehicle", pa.int64(), nullable=False),
        pa.field("busy_ratio", pa.float64(), nullable=False),
        pa.field("heard", pa.int64(), nullable=False),  # transmissions on the air in the window
    ]
)


@dataclass
class _Message:
    """What the channel keeps about a queued message besides its timing."""

    payload: bytes | None
    raw_bytes: int
    noise: PoseNoise
    listeners: tuple[int, ...]
    pending: int = 0  # receptions waiting in a receiver's inbox


class BroadcastChannel(ReceptionLog[int]):
    """Broadcasts in simulated time over one shared medium (see the module docstring); each
    reception waits in its receiver's inbox with its transmission's seq."""

    def __init__(
        self,
        link: LinkModel | None = None,
        medium: MediumConfig | None = None,
        max_age_s: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(max_age_s)
        self.link = link or LinkModel()
        self.medium = Medium(medium, self.link.config.bandwidth_mbps, seed)
        self._unsettled: list[tuple[int, Transmission]] = []  # on the air, undecided
        self._released: list[int] = []
        self._ticks: list[tuple[float, dict[int, XY]]] = []

    # ---- sending --------------------------------------------------------------------------

    def update(self, t: float, positions: Mapping[int, XY]) -> None:
        """Start a tick at ``t``: run the medium up to ``t`` and record where everyone is."""
        self.advance(t)
        self.medium.set_positions(dict(positions))
        snapshot = dict(self.medium.positions)
        if self._ticks and abs(self._ticks[-1][0] - t) <= AGE_EPS_S:
            self._ticks[-1] = (float(t), snapshot)
        else:
            self._ticks.append((float(t), snapshot))

    def broadcast(
        self,
        message: bytes | int,
        sender: int,
        t_send: float,
        listeners: Iterable[int],
        *,
        pose_noise: PoseNoise | None = None,
        raw_bytes: int | None = None,
    ) -> tuple[Transmission, Transmission | None]:
        """Queue ``message`` (bytes, or just its size) for every vehicle in ``listeners``;
        returns the transmission and the unsent one it replaced (None if none)."""
        payload, wire, raw_bytes = message_size(message, raw_bytes)
        if not math.isfinite(t_send) or wire < 0:
            raise ValueError(f"bad message: t_send={t_send}, wire_bytes={wire}")
        heard = tuple(sorted({int(r) for r in listeners} - {int(sender)}))
        meta = _Message(payload, int(raw_bytes or 0), pose_noise or PoseNoise(), heard)
        tx, old = self.medium.submit(sender, t_send, wire, meta)
        if old is not None:
            old.meta.payload = None
            self._released.append(old.seq)
        return tx, old

    # ---- receiving ------------------------------------------------------------------------

    def advance(self, until: float) -> None:
        """Run the medium to ``until`` and decide every transmission that has left the air
        (all transmissions that could overlap it have started by then)."""
        started = self.medium.advance(until)
        base = len(self.medium.on_air) - len(started)
        self._unsettled.extend((base + i, tx) for i, tx in enumerate(started))
        clock = self.medium.clock
        waiting: list[tuple[int, Transmission]] = []
        for index, tx in self._unsettled:
            if tx.end is not None and tx.end <= clock + AGE_EPS_S:
                self._settle(tx, index)
            else:
                waiting.append((index, tx))
        self._unsettled = waiting

    def _settle(self, tx: Transmission, index: int) -> None:
        meta: _Message = tx.meta
        overlaps = self.medium.overlapping(tx, index)
        max_m = self.link.config.range.max_m
        for receiver in meta.listeners:
            rx = self.medium.positions.get(receiver)
            if rx is None:
                continue
            distance = math.dist(tx.sender_xy, rx)
            dropped, latency = self.link.receive(tx.sender, receiver, distance)
            if dropped != "out_of_range" and any(
                o.sender == receiver or max_m is None or math.dist(o.sender_xy, rx) <= max_m
                for o in overlaps
                if o.sender != tx.sender
            ):
                dropped = "collision"
            assert tx.end is not None and tx.start is not None
            record = LogRecord(
                seq=len(self._records),
                sender=tx.sender,
                receiver=receiver,
                t_send=tx.t_send,
                t_arrival=None if dropped else tx.end + latency,
                t_delivered=None,
                raw_bytes=meta.raw_bytes,
                wire_bytes=tx.wire_bytes,
                distance_m=distance,
                pose_dx=meta.noise.dx,
                pose_dy=meta.noise.dy,
                pose_dyaw=meta.noise.dyaw,
                dropped=dropped,
                tx=tx.seq,
                t_tx_start=tx.start,
                t_tx_end=tx.end,
            )
            self._records.append(record)
            if record.t_arrival is not None:
                meta.pending += 1
                self._expect(record, tx.seq)
        if meta.pending == 0:
            meta.payload = None
            self._released.append(tx.seq)

    def arrived(self, receiver: int, t_now: float) -> list[Delivery]:
        """Messages for ``receiver`` that arrived by ``t_now`` and are not too old, in order
        (arrival, send time, sender, sequence). Runs the medium to ``t_now`` first."""
        self.advance(t_now)
        out: list[Delivery] = []
        for record, tx_seq in self._due(receiver, t_now):
            meta: _Message = self.medium.transmissions[tx_seq].meta
            payload = meta.payload
            meta.pending -= 1
            if meta.pending == 0:
                meta.payload = None
                self._released.append(tx_seq)
            if not self._too_old(record, t_now):
                out.append(Delivery(payload, record))
        return out

    def released(self) -> list[int]:
        """Transmissions finished with since the last call (replaced, or every reception
        handed over or dropped): a caller holding their bytes elsewhere may let them go."""
        out, self._released = self._released, []
        return out

    # ---- logs (log_table, records: ReceptionLog) ---------------------------------------

    def transmission_table(self) -> pa.Table:
        """One row per message queued, :data:`TX_SCHEMA`; ``queued_at_end`` if it is still
        waiting for the medium."""
        rows = [
            {
                "tx": tx.seq,
                "sender": tx.sender,
                "t_send": tx.t_send,
                "wire_bytes": tx.wire_bytes,
                "raw_bytes": tx.meta.raw_bytes,
                "frames": tx.frames,
                "backoff_slots": tx.backoff_slots,
                "t_start": tx.start,
                "t_end": tx.end,
                "air_s": tx.air_s,
                "listeners": len(tx.meta.listeners),
                "status": "queued_at_end" if tx.status == "queued" else tx.status,
            }
            for tx in self.medium.transmissions
        ]
        return pa.Table.from_pylist(rows, schema=TX_SCHEMA)

    def busy_table(self, tick_s: float) -> pa.Table:
        """Per tick window ``[t, t + tick_s)`` and vehicle: the fraction of the window some
        transmission it can hear (its own, or one from within ``carrier_sense_m``) is on the
        air, and how many such transmissions there were. Windows past the medium's clock are
        incomplete: call after the last tick's hand-over."""
        cfg = self.medium.config
        on_air = self.medium.on_air
        starts = [tx.start for tx in on_air]
        rows: list[dict[str, object]] = []
        for t0, positions in self._ticks:
            t1 = t0 + tick_s
            hi = bisect.bisect_left(starts, t1)  # type: ignore[arg-type]
            lo = bisect.bisect_left(starts, t0 - self.medium.max_air_s)  # type: ignore[arg-type]
            window = [tx for tx in on_air[lo:hi] if tx.end > t0 and tx.end > tx.start]
            for vehicle in sorted(positions):
                me = positions[vehicle]
                spans = sorted(
                    (max(tx.start, t0), min(tx.end, t1))
                    for tx in window
                    if tx.sender == vehicle or cfg.hears(me, tx.sender_xy)
                )
                rows.append(
                    {
                        "t": t0,
                        "vehicle": vehicle,
                        "busy_ratio": _union(spans) / tick_s if tick_s > 0 else 0.0,
                        "heard": len(spans),
                    }
                )
        return pa.Table.from_pylist(rows, schema=BUSY_SCHEMA)


def _union(spans: Sequence[tuple[float, float]]) -> float:
    """Total length of the union of sorted ``(a, b)`` intervals."""
    total, end = 0.0, -math.inf
    for a, b in spans:
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


__all__ = ["BUSY_SCHEMA", "TX_SCHEMA", "BroadcastChannel"]
