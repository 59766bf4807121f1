"""BatchNorm over the global batch of data-parallel training workers (torch's SyncBatchNorm,
which refuses CPU tensors, for every device).

With per-worker statistics, W workers x batch B normalise each activation by a batch of B,
one process x batch W*B by all of it, so the two take different steps. Here each training
forward sums ``x``, ``x^2`` and the count over the workers (one all-reduce of ``2C + 1``
numbers per layer, through autograd so gradients flow to every worker's activations); the
mean, variance, output and running statistics are then those of the whole global batch. Outside
training, or without an initialised process group of more than one worker, it is a plain
BatchNorm; the state dict keys are BatchNorm's, so checkpoints load into the plain model.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d / 2d whose training statistics span every data-parallel worker."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected (N, C, ...), got {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.new_full((1,), x.numel() / c)
        stats = dist_fn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(m * unbiased)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def use_global_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d / 2d replaced, in place, by a GlobalBatchNorm holding
    the same parameters and running statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
            norm = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
                device=child.weight.device if child.affine else None,
            )
            norm.load_state_dict(child.state_dict())
            norm.train(child.training)
            setattr(module, name, norm)
        else:
            use_global_batch_norm(child)
    return module
