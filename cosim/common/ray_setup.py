"""Starting or joining Ray safely: a local instance on loopback only, bounded connection waits.

A plain ``ray.init()`` binds its gRPC servers (GCS, raylet, workers, object manager) on every
interface and serves a Prometheus metrics endpoint on ``0.0.0.0`` without a token: on a shared
network anyone can reach them. A run on one machine needs none of that, so
:func:`init_local` makes Ray treat this machine as a single-node, loopback-only cluster (every
server on 127.0.0.1) and switches metrics collection off unless ``metrics=True``.

``ray.init(address=...)`` can wait for minutes on an address where no cluster answers, and
does not stop on SIGTERM meanwhile; :func:`connect` checks that something listens there first
and gives up after ``timeout_s`` with one clear :class:`ConnectionError`.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import ray

DEFAULT_CONNECT_TIMEOUT_S = 30.0
# Read by ray's Python at init and by every process it spawns (raylet, GCS, workers).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # node IP = 127.0.0.1
NO_METRICS_ENV = {"RAY_enable_metrics_collection": "0"}  # no metrics agent / export port


def init_local(num_cpus: int | None = None, *, metrics: bool = False, **kwargs: Any) -> None:
    """Start a local Ray instance whose servers listen on 127.0.0.1 only; no dashboard, no
    metrics endpoint unless ``metrics``. ``kwargs`` go to ``ray.init``."""
    from ray._private import ray_constants

    os.environ.update(LOOPBACK_ENV)
    if metrics:
        for key in NO_METRICS_ENV:
            os.environ.pop(key, None)
    else:
        os.environ.update(NO_METRICS_ENV)
    # ray read the loopback switch when it was imported: set the module constant too.
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; None for ``auto`` and the
    like, where ray itself finds the cluster."""
    text = address if "://" in address else f"tcp://{address}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"--address {address!r}: {err}") from None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def connect(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, **kwargs: Any) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``)
    within ``timeout_s`` seconds, or raise ConnectionError saying which address failed."""
    if not timeout_s > 0:
        raise ValueError(f"connect timeout must be > 0 s, got {timeout_s}")
    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=min(timeout_s, 5.0)).close()
        except OSError as err:
            raise ConnectionError(
                f"no Ray cluster at {address}: nothing accepts connections there "
                f"({err.strerror or type(err).__name__})"
            ) from None
    outcome: dict[str, BaseException] = {}

    def attempt() -> None:
        try:
            ray.init(address=address, log_to_driver=False, **kwargs)
        except BaseException as err:  # reported to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=attempt, name="ray-connect", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ConnectionError(
            f"no Ray cluster answered at {address} within {timeout_s:g} s "
            "(set a longer wait with --connect-timeout)"
        )
    if "error" in outcome:
        err = outcome["error"]
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConnectionError(f"cannot connect to the Ray cluster at {address}: {first}") from None


def start_ray(
    address: str | None,
    *,
    num_cpus: int | None = None,
    metrics: bool = False,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """A local loopback instance (``address`` None) or a connection to a cluster."""
    if address is None:
        init_local(num_cpus, metrics=metrics)
    else:
        connect(address, connect_timeout_s)
