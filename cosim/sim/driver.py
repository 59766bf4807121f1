"""The simulation driver: steps simulated time frame by frame, vehicles -> channel -> egos.

One tick ``t`` (docs/architecture.md, "One tick of a simulation", draws it)::

    frame = source.frame(i)                 shared once (Ray: one ray.put for every actor)
    every live vehicle: sense -> encode -> compress with its reported pose     (in parallel)
    channel: one broadcast per sender, every ego (all egos: every vehicle) a listener; the
        shared medium decides when it is on the air, each listener whether it receives it
    each ego at t + deadline: the messages that have arrived (maybe stale: older ticks),
        decode -> keep each sender's newest -> warp with the sender's reported pose at send
        time -> fuse -> head
    score each ego's boxes against ground truth in its own frame

The broadcast channel runs here, in the driver, on message sizes; the message bytes go from the
sender to the ego through the executor (object-store references under Ray). The fusion
deadline may not exceed one tick: the medium is simulated up to the deadline, and the next
tick's messages are queued at the next tick's time. Wall time is measured and reported, never
used for logic, so both executors give the same results.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow.compute as pc

from agents.payloads import payload_kind
from agents.steps import EgoResult, Inbound, SenseResult, VehicleSpec
from channel import BroadcastChannel
from cosim.sim.executors import Executor, VehicleFailure, make_executor
from cosim.sim.results import RenderItem, SimulationResult
from cosim.sim.run_config import RunConfig, check_checkpoint
from cosim.sim.run_log import EPS_S, RunLog
from cosim.sim.scoring import (
    ap_summary,
    ground_truth,
    medium_summary,
    message_summary,
    refine_summary,
    stage_summary,
    true_positives,
)
from models.checkpoint import checkpoint_bytes, load_checkpoint
from models.detector_config import DetectorConfig
from models.metrics import DetectionAccumulator
from scenarios.frame import Frame
from scenarios.source import FrameSource, close_source, is_recorded_source, open_source

log = logging.getLogger(__name__)

TickHook = Callable[[int, Executor], None]


def detector_config_of(checkpoint: str, overrides: dict[str, Any] | None = None) -> DetectorConfig:
    """The detector config stored in a checkpoint, with the run's ``overrides`` (any fusion:
    maps, points or boxes travel)."""
    # Built once here, so that bad weights are reported against this file before any actor
    # (which loads the bytes from a temporary file) starts.
    _, config, _ = load_checkpoint(check_checkpoint(checkpoint), overrides=overrides)
    return config


def _lidar_of(source: FrameSource) -> Any:
    scenario = getattr(source, "scenario", None)
    return getattr(scenario, "lidar", None)


class Simulation:
    """One run: the source, the executor, the channel and the accumulators."""

    def __init__(self, config: RunConfig, executor: Executor | None = None) -> None:
        self.config = config
        self.detector = detector_config_of(config.checkpoint, config.detector_overrides())
        # A recorded folder has fixed content: the run's seed drives the channel and noise only.
        world_seed = None if is_recorded_source(config.scenario) else config.seed
        self.source = open_source(
            config.scenario, seed=world_seed, num_cavs=config.agents, num_frames=config.frames
        )
        self.num_ticks = min(config.frames or self.source.num_frames, self.source.num_frames)
        self.dt = 1.0 / self.source.rate_hz
        self.deadline = self.dt if config.fusion_deadline_s is None else config.fusion_deadline_s
        if not 0 <= self.deadline <= self.dt + EPS_S:
            raise ValueError(
                f"fusion_deadline_s must be in [0, one tick = {self.dt:g} s], got {self.deadline}"
            )
        channel = config.channel_config()
        self.channel: BroadcastChannel = channel.make_channel(config.seed)
        self.t_end = 0.0
        self.spec = VehicleSpec(
            codec=config.codec(),
            pose_error=channel.pose_error,
            seed=config.seed,
            corruption=config.corruption,
            severity=config.severity if config.corruption else 0,
            lidar=_lidar_of(self.source),
            send=config.cooperate and self.detector.fusion != "none",
            torch_threads=config.torch_threads,
            max_age_s=channel.max_age_s,
            refine_steps=config.refine_steps,
            refine_neighbours=config.refine_neighbours,
            refine_skip_above=config.refine_skip_above,
            device=config.device,
        )
        self.executor = executor or make_executor(
            config.executor,
            config.address,
            config.actor_cpus,
            config.max_restarts,
            metrics=config.metrics,
            connect_timeout_s=config.connect_timeout_s,
            gpus_per_vehicle=config.gpus_per_vehicle,
        )
        self.acc = DetectionAccumulator()
        self.pending: dict[int, Any] = {}  # transmission -> message handle, while needed
        self.run_log = RunLog()
        self.renders: list[RenderItem] = []
        self.lost: list[int] = []
        self.interrupted = False
        self._last_t: float | None = None  # timestamp of the last complete tick

    # ---- the tick -----------------------------------------------------------------------

    def egos(self, frame: Frame) -> list[int]:
        if self.config.all_egos:
            return [a for a, obs in frame.agents.items() if not obs.is_rsu]
        return [frame.ego_id]

    def _failure(self, tick: int, failure: VehicleFailure) -> None:
        log.warning(
            "tick %d: vehicle %d failed in %s: %s",
            tick,
            failure.agent_id,
            failure.stage,
            failure.error,
        )
        self.run_log.failure(tick, failure)

    def _timed_frame(self, index: int) -> tuple[Frame, float]:
        """The source's frame and the seconds it took (world step and LiDAR simulation)."""
        t0 = time.perf_counter()
        frame = self.source.frame(index)
        return frame, time.perf_counter() - t0

    def step(self, tick: int, frame: Frame, render: bool = False) -> None:
        """One tick on ``frame`` (``source.frame(tick)``, fetched by the caller)."""
        t_start = time.perf_counter()
        t = float(frame.timestamp)
        handle = self.executor.put_frame(frame)
        t_frame = time.perf_counter()  # ray.put of the frame
        senders = [a for a in frame.agent_ids if self.executor.alive(a)]
        sensed = self.executor.sense(handle, tick, senders)
        t_sensed = time.perf_counter()
        egos = self.egos(frame)
        reports: dict[int, SenseResult] = {}
        t_channel0 = time.perf_counter()
        self.channel.update(
            t,
            {
                a: (float(frame.agent(a).lidar_pose[0, 3]), float(frame.agent(a).lidar_pose[1, 3]))
                for a in frame.agent_ids
            },
        )
        for agent_id, outcome in sensed.items():
            if isinstance(outcome, VehicleFailure):
                self._failure(tick, outcome)
                continue
            report, message = outcome
            reports[agent_id] = report
            self.run_log.time(tick, agent_id, report.timings)
            if not report.wire_bytes:
                continue
            # One broadcast: it takes air time whether or not anyone listens.
            tx, _ = self.channel.broadcast(
                report.wire_bytes,
                agent_id,
                t,
                egos,
                pose_noise=report.noise,
                raw_bytes=report.raw_bytes,
            )
            self.pending[tx.seq] = message
        inboxes: dict[int, list[tuple[Inbound, Any]]] = {}
        for ego in egos:
            if not self.executor.alive(ego):
                continue
            arrived = self.channel.arrived(ego, t + self.deadline)
            records = [d.record for d in arrived]
            self.run_log.wire_of.update((r.seq, r.wire_bytes) for r in records)
            inboxes[ego] = [
                (Inbound(r.seq, r.sender, r.t_send), self.pending[r.tx]) for r in records
            ]
        for seq in self.channel.released():  # replaced, handed over or dropped everywhere
            self.pending.pop(seq, None)
        self.t_end = t + self.dt
        t_channel = time.perf_counter()
        results = self.executor.fuse(handle, tick, inboxes)
        t_fused = time.perf_counter()
        for ego in egos:
            self._score(tick, frame, ego, results.get(ego), render and ego == egos[0])
        t_end = time.perf_counter()
        self.run_log.time(
            tick,
            -1,
            {
                "channel": t_channel - t_channel0,
                "put_frame": t_frame - t_start,
                "sense_wall": t_sensed - t_frame,
                "fuse_wall": t_fused - t_channel,
                "score": t_end - t_fused,
                "tick_wall": t_end - t_start,
            },
        )

    def _score(
        self,
        tick: int,
        frame: Frame,
        ego: int,
        result: EgoResult | VehicleFailure | None,
        render: bool,
    ) -> None:
        """Accumulate one ego's detections (none when it failed: misses count)."""
        t = float(frame.timestamp)
        gt = ground_truth(frame, ego, self.detector, self.config.min_points)
        if isinstance(result, VehicleFailure):
            self._failure(tick, result)
            result = None
        if result is None:
            boxes, scores = np.zeros((0, 7), np.float32), np.zeros(0, np.float32)
        else:
            boxes, scores = result.boxes, result.scores
            self.run_log.time(tick, ego, result.timings)
        self.acc.add(boxes, scores, gt)
        self.run_log.ego(
            tick, t, ego, boxes, scores, len(gt), true_positives(boxes, scores, gt), result
        )
        if render:
            self.renders.append(RenderItem(frame, ego, result, gt))

    # ---- the run ------------------------------------------------------------------------

    def run(
        self,
        on_tick: TickHook | None = None,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SimulationResult:
        """Start the vehicles, step every tick, stop them; returns the tables and summary.

        ``should_stop`` is polled before each tick (see :mod:`cosim.common.interrupts`): when it
        says
        so, the run ends there. A ``KeyboardInterrupt`` inside a tick abandons that tick
        (its rows and scores are rolled back). Either way the result holds the complete ticks
        and ``summary["interrupted"]`` is True.
        """
        blob = checkpoint_bytes(self.config.checkpoint, self.config.detector_overrides())
        first, first_s = self._timed_frame(0)
        wanted = (
            set(
                np.linspace(0, self.num_ticks - 1, self.config.render_frames)
                .round()
                .astype(int)
                .tolist()
            )
            if self.config.render_frames > 0
            else set()
        )
        t0 = time.perf_counter()
        self.executor.start(first.agent_ids, blob, self.spec)
        t_started = time.perf_counter()
        # The next frame is built in a background thread while the vehicles work on this one
        # (the source is only ever called from that thread, in order).
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-prefetch")
        done = 0
        try:
            upcoming = None
            tick, mark = 0, self.acc.mark()
            try:
                for tick in range(self.num_ticks):
                    if should_stop is not None and should_stop():
                        self.interrupted = True
                        break
                    mark = self.acc.mark()
                    t_wait = time.perf_counter()
                    frame, world_s = (first, first_s) if upcoming is None else upcoming.result()
                    if tick + 1 < self.num_ticks:
                        upcoming = pool.submit(self._timed_frame, tick + 1)
                    self.run_log.time(
                        tick, -1, {"world": world_s, "source_wait": time.perf_counter() - t_wait}
                    )
                    if on_tick is not None:
                        on_tick(tick, self.executor)
                    self.step(tick, frame, render=tick in wanted)
                    done, self._last_t = tick + 1, float(frame.timestamp)
                    if progress is not None:
                        progress(tick)
            except KeyboardInterrupt:  # a second signal: abandon the tick under way
                self.interrupted = True
                if done <= tick:
                    self._abandon(tick, mark)
            wall = time.perf_counter() - t_started  # shutting down is not part of the run
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.lost = [a for a in first.agent_ids if not self.executor.alive(a)]
            self.executor.close()
            close_source(self.source)
        return self._result(first, wall, t_started - t0, done)

    def _abandon(self, tick: int, mark: tuple[int, int]) -> None:
        """Forget everything the unfinished ``tick`` recorded."""
        self.acc.rollback(mark)
        self.run_log.abandon(tick)
        self.renders = [r for r in self.renders if r.frame.index < tick]

    def _result(self, first: Frame, wall: float, startup: float, done: int) -> SimulationResult:
        tables = self.run_log.tables()
        # The last tick's window of the medium: the last complete one when interrupted.
        last = (
            self.t_end if not self.interrupted or self._last_t is None else (self._last_t + self.dt)
        )
        self.channel.advance(last)
        messages = self.channel.log_table()
        transmissions = self.channel.transmission_table()
        busy = self.channel.busy_table(self.dt)
        if self.interrupted:  # only what was sent in complete ticks
            sent_by = -math.inf if self._last_t is None else self._last_t + EPS_S
            messages = messages.filter(pc.less_equal(messages["t_send"], sent_by))
            transmissions = transmissions.filter(pc.less_equal(transmissions["t_send"], sent_by))
            busy = busy.filter(pc.less_equal(busy["t"], sent_by))
        failed = sorted({e["agent"] for e in self.run_log.events})
        summary = {
            "scenario": self.source.name,
            "frames": done,
            "frames_planned": self.num_ticks,
            "interrupted": self.interrupted,
            "vehicles": first.agent_ids,
            "ego": first.ego_id,
            "all_egos": self.config.all_egos,
            "executor": self.executor.name,
            "checkpoint": self.config.checkpoint,
            "model": self.detector.name,
            "fusion": self.detector.fusion,
            "payload": payload_kind(self.detector.fusion),
            "cooperate": self.spec.send,
            "channel": self.config.channel_name,
            # Points and boxes have one fixed format (channel.payload_codec): no map codec.
            "codec": (
                {"dtype": self.config.dtype, "sparsity": self.config.sparsity}
                if payload_kind(self.detector.fusion) == "map"
                else None
            ),
            **ap_summary(self.acc),
            "messages": message_summary(messages, tables["receptions"]),
            "medium": medium_summary(transmissions, busy, max(done, 1)),
            "stage_s_per_tick": stage_summary(tables["timings"], max(done, 1)),
            "refine": refine_summary(tables["frames"], self.detector, self.config),
            "wall_s": wall,
            "startup_s": startup,
            "frames_per_s": done / wall if wall > 0 else math.nan,
            "failures": self.run_log.events,
            "failed_vehicles": failed,
            "lost_vehicles": self.lost,
        }
        return SimulationResult(
            self.config,
            summary,
            messages,
            tables["receptions"],
            tables["detections"],
            tables["frames"],
            tables["timings"],
            self.run_log.events,
            self.renders,
            transmissions,
            busy,
        )


def run_simulation(
    config: RunConfig,
    executor: Executor | None = None,
    on_tick: TickHook | None = None,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SimulationResult:
    """Run one simulation end to end (see :class:`Simulation`)."""
    return Simulation(config, executor).run(on_tick, progress, should_stop)
