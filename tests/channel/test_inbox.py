"""The receiver's age-of-information buffer: newest per sender, kept across ticks, aged out."""

from __future__ import annotations

import pytest

from channel.inbox import ReceiveBuffer


def test_keeps_the_newest_per_sender_across_ticks() -> None:
    inbox: ReceiveBuffer[str] = ReceiveBuffer(max_age_s=0.3)
    assert inbox.offer(2, 10, 0.1, "b@0.1") and inbox.offer(1, 11, 0.1, "a@0.1")
    assert not inbox.offer(2, 4, 0.0, "b@0.0")  # arrived late, older than what is held
    assert [h.item for h in inbox.current(0.2)] == ["a@0.1", "b@0.1"]
    assert inbox.offer(2, 20, 0.2, "b@0.2")  # a newer one replaces it
    assert [h.item for h in inbox.current(0.3)] == ["a@0.1", "b@0.2"]
    assert not inbox.offer(2, 19, 0.2, "same time, lower seq")


def test_forgets_messages_past_the_maximum_age() -> None:
    inbox: ReceiveBuffer[int] = ReceiveBuffer(max_age_s=0.2)
    inbox.offer(1, 0, 0.1, 1)
    inbox.offer(2, 1, 0.2, 2)
    assert [h.sender for h in inbox.current(0.1 + 0.2)] == [1, 2]  # exactly 0.2 s: kept
    assert [h.sender for h in inbox.current(0.35)] == [2] and len(inbox) == 1
    assert ReceiveBuffer[int](None).offer(1, 0, -100.0, 0)
    with pytest.raises(ValueError, match="max_age_s"):
        ReceiveBuffer(-1.0)
