"""Fan a list of Ray tasks out with a bound on how many run at once (sweeps, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ray

Item = TypeVar("Item")


def run_bounded(
    submit: Callable[[Item], Any],
    items: Sequence[Item],
    parallel: int,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Any]:
    """``ray.get(submit(item))`` for every item, at most ``parallel`` in flight; results in
    item order. ``progress(done, total)`` runs as each task finishes.

    When ``should_stop()`` turns True (polled at least once a second, see
    :mod:`cosim.common.interrupts`), the tasks in flight are cancelled and nothing more is
    submitted;
    the items that did not finish keep ``None`` in the result.
    """
    results: list[Any] = [None] * len(items)
    pending: dict[Any, int] = {}
    next_index = done = 0
    while next_index < len(items) or pending:
        if should_stop is not None and should_stop():
            for ref in pending:
                ray.cancel(ref, force=True)
            break
        while next_index < len(items) and len(pending) < max(1, parallel):
            pending[submit(items[next_index])] = next_index
            next_index += 1
        ready, _ = ray.wait(
            list(pending), num_returns=1, timeout=None if should_stop is None else 1.0
        )
        for ref in ready:
            results[pending.pop(ref)] = ray.get(ref)
            done += 1
            if progress is not None:
                progress(done, len(items))
    return results
