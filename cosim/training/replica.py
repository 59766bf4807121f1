"""Where this process stands among data-parallel training workers (rank, world, device), and
the all-reduces and sample sharding that make W workers train like one with a W-times batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Replica:
    """This process's place among data-parallel training workers: rank ``rank`` of ``world``
    (0 of 1 in a plain ``cosim train``) and the device its model runs on."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def chief(self) -> bool:
        """Worker 0 writes the run folder and evaluates."""
        return self.rank == 0

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This worker's share of an epoch's shuffled sample order, as torch's
        DistributedSampler cuts it: padded by wrapping to a multiple of the workers, then every
        ``world``-th sample from ``rank``. So step k of W workers x batch B covers exactly the
        samples of step k of one worker x batch W*B."""
        if self.world == 1:
            return order
        padded = np.resize(order, math.ceil(len(order) / self.world) * self.world)
        return padded[self.rank :: self.world]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over the workers (an all-reduce; ``values`` for one)."""
        if self.world == 1:
            return values
        total = values.detach().clone()
        dist.all_reduce(total)
        return total / self.world

    def normaliser(self, positives: torch.Tensor) -> torch.Tensor:
        """The head loss's divisor: the global batch's positives (at least 1) over the workers,
        so DDP's mean of the workers' gradients is the gradient of one big batch."""
        if self.world == 1:
            return positives.clamp(min=1)
        return (self.mean(positives) * self.world).clamp(min=1) / self.world
