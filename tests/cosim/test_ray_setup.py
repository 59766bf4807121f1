"""Ray is started on loopback only, without a metrics endpoint, and a cluster address that does
not answer fails within the connect timeout with one clear line. Each Ray start runs in its own
interpreter, so a half-made connection cannot leak into other tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.adversarial.malformed import assert_one_error_line, cosim

ROOT = Path(__file__).resolve().parents[2]

LOCAL_PROBE = r"""
import json, os, re, subprocess
from cosim.common.ray_setup import init_local
import ray
init_local(1)
node = ray.nodes()[0]
pids = {os.getpid()}
for procs in ray._private.worker._global_node.all_processes.values():
    pids.update(p.process.pid for p in procs)
todo = list(pids)
while todo:  # and their children (workers, agents)
    pid = todo.pop()
    try:
        kids = [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        kids = []
    todo += [k for k in kids if k not in pids]
    pids.update(kids)
listening = []
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids:
        listening.append(line.split()[3])
print(json.dumps({"ip": node["NodeManagerAddress"], "metrics_port": node.get("MetricsExportPort"),
                  "listening": listening}))
ray.shutdown()
"""


def _python(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_local_instance_listens_on_loopback_only_without_metrics() -> None:
    done = _python(LOCAL_PROBE, 180)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["ip"] == "127.0.0.1"
    assert facts["metrics_port"] in (None, -1, 0)
    assert facts["listening"], "expected Ray's servers to listen somewhere"
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    assert all(addr.startswith(loopback) for addr in facts["listening"]), facts["listening"]


def test_address_with_nothing_listening_fails_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    code, out = cosim(["run", "--address", "127.0.0.1:1", "--frames", "1"], capsys)
    assert time.perf_counter() - started < 20
    assert_one_error_line(
        code,
        out,
        "no Ray cluster at 127.0.0.1:1: nothing accepts connections there (Connection refused)",
    )


SILENT_PEER = r"""
import socket, sys, time
from cosim.common.ray_setup import connect
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(5)
address = sys.argv[1].replace("PORT", str(server.getsockname()[1]))
start = time.perf_counter()
try:
    connect(address, 2.0)
except ConnectionError as err:
    print(round(time.perf_counter() - start, 1), err)
"""


@pytest.mark.parametrize("address", ["127.0.0.1:PORT", "ray://127.0.0.1:PORT"])
def test_address_that_never_answers_times_out(address: str) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", SILENT_PEER, address],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert time.perf_counter() - started < 30
    seconds, _, message = done.stdout.strip().splitlines()[-1].partition(" ")
    assert 1.9 <= float(seconds) <= 5.0
    assert message.startswith("no Ray cluster answered at ")
    assert message.endswith(" within 2 s (set a longer wait with --connect-timeout)")
