"""docker-compose.yml: it validates, every ``cosim`` command its services run parses with the
real CLI, and its head / worker / train commands, run as plain processes on 127.0.0.1 (one
head node, one worker node, each with its own temp dir and ports), train 2 Ray Train workers
across the two nodes to a checkpoint. No image is pulled or built here."""

from __future__ import annotations

import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from cosim.cli.app import app
from tests.cosim.test_train import config_dict

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
RAY = str(Path(sys.executable).with_name("ray"))
COSIM = str(Path(sys.executable).with_name("cosim"))


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def command_segments(command: str) -> list[list[str]]:
    """A service command as argv lists: ``sh -c "a && exec b"`` -> [a, b]."""
    words = shlex.split(command)
    if words[:2] == ["sh", "-c"]:
        parts = words[2].split("&&")
        return [[w for w in shlex.split(p) if w != "exec"] for p in parts]
    return [words]


def cosim_commands() -> dict[str, list[str]]:
    found = {}
    for name, service in services().items():
        for argv in command_segments(service.get("command", "")):
            if argv[0] == "cosim":
                found[name] = argv[1:]
    return found


def compose_cli() -> list[str] | None:
    """``docker compose`` when the plugin is there, else ``docker-compose``, else None."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed "
            "(Debian: apt-get install docker-compose)"
        )
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    done = subprocess.run(
        [*cli, "--env-file", ".env.example", "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = subprocess.run(
        [*cli, "--env-file", str(empty), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "RAY_AUTH_TOKEN" in missing.stderr


def test_the_layout_the_issue_asks_for() -> None:
    s = services()
    assert {
        "ray-head",
        "ray-worker",
        "train",
        "sim",
        "ray-worker-gpu",
        "train-gpu",
        "carla",
        "sim-carla",
    } <= set(s)
    assert all(p.startswith("127.0.0.1:") for p in s["ray-head"]["ports"])
    assert "--head" in s["ray-head"]["command"] and "--block" in s["ray-head"]["command"]
    assert "container_name" not in s["ray-worker"] and "ports" not in s["ray-worker"]
    for name in ("ray-head", "ray-worker", "train", "sim", "ray-worker-gpu", "train-gpu"):
        env = s[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith(
            "${RAY_AUTH_TOKEN:?"
        )
        assert {"./data:/app/data", "./runs:/app/runs"} <= set(s[name]["volumes"])
    for name in ("ray-worker-gpu", "train-gpu"):
        assert s[name]["build"]["args"]["EXTRAS"] == "gpu" and s[name]["profiles"] == ["gpu"]
        assert s[name]["image"] == "v2x-cosim:gpu"
    devices = s["ray-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert s["carla"]["image"] == "carlasim/carla:0.9.16"
    assert cosim_commands()["sim-carla"][:2] == ["run", "carla://carla:2000"]
    assert ".env" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("service", sorted(cosim_commands()))
def test_every_cosim_command_of_a_service_parses(service: str) -> None:
    """The real CLI parses the command's flags and values (it is not run)."""
    argv = cosim_commands()[service]
    group = typer.main.get_command(app)
    parent = group.make_context("cosim", list(argv), resilient_parsing=True)
    name, command, rest = group.resolve_command(parent, list(argv))
    assert command is not None, f"{service}: no cosim command {argv[0]!r}"
    command.make_context(name, rest, parent=parent)  # raises on an unknown flag or bad value
    assert "--address" in argv and argv[argv.index("--address") + 1] == "auto"


# ---- the compose commands as plain processes -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_port_base() -> int:
    """The first of 61 worker ports, below the kernel's ephemeral range, where ``free_port``
    (and every other bind to port 0) draws from: a range inside it collided with a port
    already handed to another Ray component ("worker_ports is trying to use a port number
    that is used by other components")."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    start = 10000 if low > 11000 else 1100
    if not WORKER_PORT_BASES:  # one random draw per test process, then distinct ranges
        first = random.randrange(start, max(start + 100, low - 1000), 100)
        WORKER_PORT_BASES.extend(range(first, low - 100, 100))
    return WORKER_PORT_BASES.pop(0)


WORKER_PORT_BASES: list[int] = []


def local(argv: list[str], temp_dir: Path, gcs_port: int) -> list[str]:
    """A compose ``ray start`` command for this machine: its own temp dir and free ports on
    127.0.0.1 in place of the container's, not blocking, no dashboard (the only change in
    what it runs), one CPU so each node takes one training worker."""
    out = [RAY, "start"]
    for word in argv[2:]:
        key = word.split("=", 1)[0]
        if key in (
            "--block",
            "--port",
            "--dashboard-host",
            "--dashboard-port",
            "--ray-client-server-port",
        ):
            continue
        out.append(f"--address=127.0.0.1:{gcs_port}" if key == "--address" else word)
    if "--head" in argv:
        out += [
            f"--port={gcs_port}",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
        ]
    base = worker_port_base()
    return out + [
        f"--temp-dir={temp_dir}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--min-worker-port={base}",
        f"--max-worker-port={base + 60}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def kill_started_under(folder: Path) -> None:
    """End the processes whose command line names ``folder`` (this test's Ray nodes only),
    by pid: ``ray stop`` would stop every Ray instance on the machine."""
    mark = str(folder).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, dict[str, str], list[Path]]]:
    """The compose head and worker commands as two local Ray nodes; yields the GCS address,
    the environment every node and job shares (token auth) and the two temp dirs."""
    root = Path(tempfile.mkdtemp(prefix="r15c-", dir="/tmp"))
    gcs = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ADDRESS": f"127.0.0.1:{gcs}",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    s = services()
    nodes = [root / "head", root / "worker"]
    try:
        for service, temp in zip(("ray-head", "ray-worker"), nodes, strict=True):
            argv = local(command_segments(s[service]["command"])[0], temp, gcs)
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{service}: {done.stdout}\n{done.stderr}"
        yield f"127.0.0.1:{gcs}", env, nodes
    finally:
        kill_started_under(root)
        shutil.rmtree(root, ignore_errors=True)


def test_compose_head_worker_and_train_train_across_two_nodes(
    two_nodes: tuple[str, dict[str, str], list[Path]], tiny_data: Path, tmp_path: Path
) -> None:
    address, env, nodes = two_nodes
    argv = cosim_commands()["train"]
    config = tmp_path / "tiny.yaml"
    raw = config_dict(tiny_data, tmp_path / "run", batch_size=2, epochs=1, steps_per_epoch=2)
    raw["data"] = {"train": str(tiny_data), "egos": "all"}
    config.write_text(yaml.safe_dump(raw))
    # The compose train command with the tiny config and a local storage path.
    args = [str(config) if a.endswith(".yaml") else a for a in argv]
    args[args.index("--storage") + 1] = str(tmp_path / "storage")
    done = subprocess.run(
        [COSIM, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "best.pt").is_file()
    assert list((tmp_path / "storage").glob("run/checkpoint_*/last.pt"))
    # One training worker on each node: each node's own logs hold a Ray Train worker.
    for node in nodes:
        assert list(node.glob("session_*/logs/train/ray-train-app-worker-*")), node
