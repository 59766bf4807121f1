"""The device path on a CPU-only machine: ``--device`` reaches every model, no tensor reaches
numpy except through ``.cpu()``, and CUDA asked of a machine without it is a clear error.

No GPU runs here. In place of one, :func:`numpy_only_after_cpu` makes ``Tensor.numpy`` (and so
``np.asarray(tensor)``) refuse any tensor that did not come out of ``.cpu()``: exactly the
conversions that raise on a CUDA tensor.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cosim.training.train
from cosim.cli.app import app
from cosim.sim.driver import run_simulation
from cosim.sim.run_config import RunConfig
from cosim.training.evaluate import EvalOptions, evaluate_report
from cosim.training.replica import Replica
from cosim.training.train import train
from cosim.training.train_config import TrainConfig
from models.checkpoint import load_checkpoint, read_checkpoint
from models.device import check_gpu_fraction, cluster_device, resolve_device, to_numpy
from models.message_bound import message_value_bounds
from tests.agents.helpers import write_small_scenario, write_tiny_checkpoint
from tests.cosim.test_train import config_dict

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "channel", "configkit", "cosim", "models", "scenarios", "bench", "scripts")


@pytest.fixture
def numpy_only_after_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``Tensor.numpy`` raises unless the tensor is the result of ``.cpu()``; yields the list
    of conversions that passed, so a test can show the path really converted something."""
    original_cpu, original_numpy = torch.Tensor.cpu, torch.Tensor.numpy
    passed: list[str] = []

    def cpu(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out = original_cpu(self, *args, **kwargs)
        out = out.view_as(out) if out is self else out  # a new object to mark, same data
        out._came_through_cpu = True  # type: ignore[attr-defined]
        return out

    def numpy(self: torch.Tensor, *args: object, **kwargs: object) -> np.ndarray:
        if not getattr(self, "_came_through_cpu", False):
            raise AssertionError(
                f"Tensor.numpy() on a {tuple(self.shape)} tensor that did not "
                "come through .cpu(): it would raise on a CUDA tensor"
            )
        passed.append(str(tuple(self.shape)))
        return original_numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    yield passed


def test_the_guard_catches_a_direct_conversion(numpy_only_after_cpu: list[str]) -> None:
    with pytest.raises(AssertionError, match="did not come through .cpu"):
        torch.ones(3).numpy()
    with pytest.raises(AssertionError, match="did not come through .cpu"):
        np.asarray(torch.ones(3))
    assert to_numpy(torch.ones(3, requires_grad=True) * 2).tolist() == [2.0, 2.0, 2.0]


def test_every_numpy_call_in_the_code_follows_cpu() -> None:
    """Static half of the check: ``X.numpy()`` only as ``X.cpu().numpy()`` (to_numpy)."""
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "numpy"
                ):
                    receiver = node.func.value
                    if not (
                        isinstance(receiver, ast.Call)
                        and isinstance(receiver.func, ast.Attribute)
                        and receiver.func.attr == "cpu"
                    ):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")  # no GPU here
    with pytest.raises(ValueError, match="--device 'cuda': this machine has no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"--device 'tpu': expected one of \['auto', 'cpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cluster_device_and_gpu_fractions() -> None:
    assert cluster_device("auto", 0.0) == "cpu" and cluster_device("auto", 2.0) == "cuda"
    assert cluster_device("cuda", 1.0) == "cuda" and cluster_device("cpu", 4.0) == "cpu"
    with pytest.raises(ValueError, match="--device 'cuda': the Ray cluster has no GPU"):
        cluster_device("cuda", 0.0)
    assert check_gpu_fraction(0.25, "--gpus-per-vehicle") == 0.25
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match="--gpus-per-vehicle"):
            check_gpu_fraction(bad, "--gpus-per-vehicle")


def test_train_eval_and_run_pass_the_device_and_convert_through_cpu(
    tiny_data: Path,
    tmp_path: Path,
    numpy_only_after_cpu: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen: list[torch.device] = []
    real_run = cosim.training.train.run_training

    def spy(
        config: TrainConfig, replica: Replica, *args: object, **kwargs: object
    ) -> cosim.training.train.TrainResult:
        chosen.append(replica.device)
        return real_run(config, replica, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cosim.training.train, "run_training", spy)
    config = TrainConfig.from_dict(
        config_dict(tiny_data, tmp_path / "run", epochs=1, steps_per_epoch=2), "test config"
    )
    train(config, device="cpu")  # includes validation: predict -> decode -> numpy
    assert chosen == [torch.device("cpu")]
    payload = read_checkpoint(tmp_path / "run" / "last.pt", map_location="meta")
    assert payload["state_dict"]  # loads with any map_location
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    tensors = [
        *saved["state_dict"].values(),
        *(
            v
            for s in saved["optimizer_state"]["optimizer"]["state"].values()
            for v in s.values()
            if isinstance(v, torch.Tensor)
        ),
    ]
    assert tensors and all(t.device.type == "cpu" for t in tensors)

    model, _, _ = load_checkpoint(tmp_path / "run" / "best.pt", map_location="cpu")
    assert model.device == torch.device("cpu")
    report = evaluate_report(model, tiny_data, EvalOptions(frames=2), progress=False)
    assert report["frames"] == 2
    assert message_value_bounds(model) is None or len(message_value_bounds(model)[0]) > 0

    scenario = write_small_scenario(tmp_path / "small.yaml")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    result = run_simulation(
        RunConfig(
            scenario=str(scenario),
            checkpoint=str(checkpoint),
            frames=2,
            channel="ideal",
            executor="inprocess",
            render_frames=0,
            device="cpu",
        )
    )
    assert result.summary["frames"] == 2 and result.summary["messages"]["sent"] > 0
    assert numpy_only_after_cpu  # model outputs did reach numpy, all through .cpu()


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "{ckpt}", "--data", "{data}", "--device", "cuda"],
        [
            "run",
            "--checkpoint",
            "{ckpt}",
            "--executor",
            "inprocess",
            "--frames",
            "1",
            "--device",
            "cuda",
            "--out",
            "{tmp}/run",
        ],
        [
            "robustness",
            "{ckpt}",
            "--data",
            "{data}",
            "--parallel",
            "0",
            "--device",
            "cuda",
            "--out",
            "{tmp}/rob",
        ],
    ],
    ids=["eval", "run", "robustness"],
)
def test_cuda_on_a_cpu_machine_is_a_clear_error(
    argv: list[str], tiny_data: Path, tmp_path: Path
) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    args = [a.format(ckpt=checkpoint, data=tiny_data, tmp=tmp_path) for a in argv]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--device 'cuda'" in " ".join(result.output.split())


def test_vehicle_actors_reserve_a_gpu_fraction_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """RayExecutor.start on a cluster with GPUs: each actor asks for --gpus-per-vehicle and
    loads its model on cuda; on a CPU cluster it asks for none (Ray itself is faked here)."""
    import agents.vehicle
    import cosim.sim.executors as executors
    from agents.steps import VehicleSpec

    asked: list[dict[str, object]] = []

    class FakeActor:
        class warm_up:  # noqa: N801 - mimics actor.method.remote
            @staticmethod
            def remote() -> str:
                return "node"

    class FakeOptions:
        def __init__(self, **kwargs: object) -> None:
            asked.append(kwargs)

        def remote(self, agent_id: int, blob: object, spec: VehicleSpec) -> FakeActor:
            asked[-1]["device"] = spec.device
            return FakeActor()

    monkeypatch.setattr(agents.vehicle.VehicleActor, "options", FakeOptions)
    monkeypatch.setattr(executors.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(executors.ray, "put", lambda blob: blob)
    monkeypatch.setattr(executors.ray, "get", lambda refs, timeout=None: refs)
    for gpus, expected in ((2.0, (0.5, "cuda")), (0.0, (0, "cpu"))):
        monkeypatch.setattr(executors.ray, "cluster_resources", lambda g=gpus: {"GPU": g})
        executor = executors.RayExecutor(gpus_per_vehicle=0.5)
        executor.start([1, 2], b"model", VehicleSpec(device="auto"))
        assert [(a["num_gpus"], a["device"]) for a in asked] == [expected, expected]
        asked.clear()
    monkeypatch.setattr(executors.ray, "cluster_resources", lambda: {})
    with pytest.raises(ValueError, match="--device 'cuda': the Ray cluster has no GPU"):
        executors.RayExecutor().start([1], b"model", VehicleSpec(device="cuda"))
