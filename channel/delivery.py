"""Delivery in simulated time: send at ``t``, collect what has arrived for a receiver by ``t'``.

:class:`DeliveryQueue` runs every message through a :class:`~channel.links.LinkModel` at send
time, holds the survivors in one heap per receiver, and hands them over in a deterministic
order: arrival time, then send time, sender id, sequence number. At hand-over a receiver with
``max_age_s`` drops messages whose age ``t_now - t_send`` exceeds it ("too_old").

Each sent message (one per sender -> receiver link) is one log row; :data:`LOG_SCHEMA`:

=============  ========  ===============================================================
seq            int64     global send order, from 0
sender         int64     sender id
receiver       int64     receiver id
t_send         float64   simulated send time (s)
t_arrival      float64   arrival time (s); null when out_of_range or lost
t_delivered    float64   time of the ``arrived`` call that handed it over or dropped it as
                         too_old; null while in flight or when never arriving
raw_bytes      int64     float32 size of what it carries (dense map, cloud or boxes)
wire_bytes     int64     bytes on the wire
distance_m     float64   sender -> receiver distance at send time (m)
pose_dx        float64   reported-pose error x (m)
pose_dy        float64   reported-pose error y (m)
pose_dyaw      float64   reported-pose error yaw (rad)
dropped        string    null, "out_of_range", "lost", "collision" or "too_old"
tx             int64     the transmission (broadcast) it belongs to; = seq here
t_tx_start     float64   when that transmission went on the air (s)
t_tx_end       float64   when it left the air (s)
=============  ========  ===============================================================

:class:`channel.broadcast.BroadcastChannel` writes the same schema, one row per reception of a
broadcast (several rows share a ``tx``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from channel.codec import peek_header
from channel.links import LinkModel
from channel.pose_error import PoseNoise

DROP_REASONS = ("out_of_range", "lost", "collision", "too_old")
# Age comparisons allow for float error in sums of tick times (0.1 + 0.2 != 0.3).
AGE_EPS_S = 1e-9

LOG_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("sender", pa.int64(), nullable=False),
        pa.field("receiver", pa.int64(), nullable=False),
        pa.field("t_send", pa.float64(), nullable=False),
        pa.field("t_arrival", pa.float64()),
        pa.field("t_delivered", pa.float64()),
        pa.field("raw_bytes", pa.int64(), nullable=False),
        pa.field("wire_bytes", pa.int64(), nullable=False),
        pa.field("distance_m", pa.float64(), nullable=False),
        pa.field("pose_dx", pa.float64(), nullable=False),
        pa.field("pose_dy", pa.float64(), nullable=False),
        pa.field("pose_dyaw", pa.float64(), nullable=False),
        pa.field("dropped", pa.string()),
        pa.field("tx", pa.int64(), nullable=False),
        pa.field("t_tx_start", pa.float64()),
        pa.field("t_tx_end", pa.float64()),
    ]
)


@dataclass
class LogRecord:
    """One log row; ``t_delivered`` and ``dropped`` are filled in at hand-over."""

    seq: int
    sender: int
    receiver: int
    t_send: float
    t_arrival: float | None
    t_delivered: float | None
    raw_bytes: int
    wire_bytes: int
    distance_m: float
    pose_dx: float
    pose_dy: float
    pose_dyaw: float
    dropped: str | None
    tx: int = -1
    t_tx_start: float | None = None
    t_tx_end: float | None = None


@dataclass(frozen=True)
class Delivery:
    """A message handed to its receiver: the bytes (None if only a size was sent) and its row."""

    message: bytes | None
    record: LogRecord


def message_size(
    message: bytes | bytearray | int, raw_bytes: int | None
) -> tuple[bytes | None, int, int | None]:
    """``(payload, wire bytes, raw bytes)`` of what is sent: encoded bytes (raw bytes default
    to the size the message header states) or just a size in bytes (no payload)."""
    if isinstance(message, bytes | bytearray):
        payload = bytes(message)
        if raw_bytes is None:
            raw_bytes = peek_header(payload).raw_nbytes
        return payload, len(payload), raw_bytes
    return None, int(message), raw_bytes


Item = TypeVar("Item")


class ReceptionLog(Generic[Item]):
    """What both channel models keep of receptions: one :class:`LogRecord` each, and per
    receiver a heap of those that will arrive, keyed (arrival, send time, sender, seq), each
    with an ``Item`` (the bytes, or the transmission's seq), and the hand-over rule."""

    def __init__(self, max_age_s: float | None) -> None:
        if max_age_s is not None and not max_age_s >= 0:
            raise ValueError(f"max_age_s must be >= 0 or None, got {max_age_s}")
        self.max_age_s = max_age_s
        self._records: list[LogRecord] = []
        self._inbox: dict[int, list[tuple[float, float, int, int, Item]]] = {}

    def _expect(self, record: LogRecord, item: Item) -> None:
        """Queue an arriving reception (``record.t_arrival`` set) for its receiver."""
        assert record.t_arrival is not None
        key = (record.t_arrival, record.t_send, record.sender, record.seq, item)
        heapq.heappush(self._inbox.setdefault(record.receiver, []), key)

    def _due(self, receiver: int, t_now: float) -> Iterator[tuple[LogRecord, Item]]:
        """Pop, in order, the receptions of ``receiver`` that arrived by ``t_now``, each marked
        handed over at ``t_now``."""
        heap = self._inbox.get(int(receiver), [])
        while heap and heap[0][0] <= t_now:
            _, _, _, seq, item = heapq.heappop(heap)
            record = self._records[seq]
            record.t_delivered = float(t_now)
            yield record, item

    def _too_old(self, record: LogRecord, t_now: float) -> bool:
        """True, and the record marked ``too_old``, when its age at ``t_now`` is above
        ``max_age_s``."""
        if self.max_age_s is not None and t_now - record.t_send > self.max_age_s + AGE_EPS_S:
            record.dropped = "too_old"
            return True
        return False

    def in_flight(self, receiver: int | None = None) -> int:
        """Receptions that will arrive and are not yet handed over (to ``receiver``, or to
        anyone)."""
        if receiver is not None:
            return len(self._inbox.get(int(receiver), []))
        return sum(len(heap) for heap in self._inbox.values())

    @property
    def records(self) -> list[LogRecord]:
        """All log rows so far, in the order they were decided (live objects: hand-over
        updates them)."""
        return list(self._records)

    def log_table(self) -> pa.Table:
        """One row per reception, :data:`LOG_SCHEMA`."""
        columns: dict[str, list[object]] = {f.name: [] for f in fields(LogRecord)}
        for record in self._records:
            for name, value in asdict(record).items():
                columns[name].append(value)
        return pa.Table.from_pydict(columns, schema=LOG_SCHEMA)


class DeliveryQueue(ReceptionLog[bytes | None]):
    """Messages in flight between agents, in simulated time."""

    def __init__(self, link: LinkModel | None = None, max_age_s: float | None = None) -> None:
        super().__init__(max_age_s)
        self.link = link or LinkModel()

    def send(
        self,
        message: bytes | int,
        sender: int,
        receiver: int,
        t_send: float,
        sender_xy: tuple[float, float] = (0.0, 0.0),
        receiver_xy: tuple[float, float] = (0.0, 0.0),
        *,
        pose_noise: PoseNoise | None = None,
        raw_bytes: int | None = None,
    ) -> LogRecord:
        """Send encoded ``message`` (or just its size in bytes) over the link sender->receiver.

        ``raw_bytes`` defaults to the size the message header states (0 for a bare size);
        ``pose_noise`` is the error the sender put on its reported pose, for the log.
        """
        payload, wire, raw_bytes = message_size(message, raw_bytes)
        outcome = self.link.transmit(sender, receiver, t_send, wire, sender_xy, receiver_xy)
        noise = pose_noise or PoseNoise()
        record = LogRecord(
            seq=len(self._records),
            sender=int(sender),
            receiver=int(receiver),
            t_send=float(t_send),
            t_arrival=outcome.arrival,
            t_delivered=None,
            raw_bytes=int(raw_bytes or 0),
            wire_bytes=wire,
            distance_m=outcome.distance_m,
            pose_dx=noise.dx,
            pose_dy=noise.dy,
            pose_dyaw=noise.dyaw,
            dropped=outcome.dropped,
            tx=len(self._records),
            t_tx_start=outcome.tx_start,
            t_tx_end=outcome.tx_end,
        )
        self._records.append(record)
        if outcome.arrival is not None:
            self._expect(record, payload)
        return record

    def arrived(self, receiver: int, t_now: float) -> list[Delivery]:
        """Messages for ``receiver`` that arrived by ``t_now`` and are not too old, in order."""
        return [
            Delivery(payload, record)
            for record, payload in self._due(receiver, t_now)
            if not self._too_old(record, t_now)
        ]

    def write_log(self, path: str | Path) -> Path:
        """Write the log table to Parquet at ``path``; returns the path."""
        path = Path(path)
        pq.write_table(self.log_table(), path)
        return path


def empty_log() -> pa.Table:
    """A zero-row table with :data:`LOG_SCHEMA` (for concatenating runs)."""
    return LOG_SCHEMA.empty_table()


__all__ = [
    "DROP_REASONS",
    "LOG_SCHEMA",
    "Delivery",
    "DeliveryQueue",
    "LogRecord",
    "ReceptionLog",
    "empty_log",
    "message_size",
]
