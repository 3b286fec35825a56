"""Centre loss (Wen et al. 2016) as the BNNeck strong baseline (BoT) defines and trains it."""

from __future__ import annotations

import torch
from torch import nn

from occreid.losses.precision import upcast


class CenterLoss(nn.Module):
    """Mean over the batch of ||f_i - c_{y_i}||^2 (summed over dims, clamped to [1e-12, 1e12]).

    BoT trains the centres with their own SGD at lr 0.5 (`make_optimizer`) and, because the loss enters
    the total with weight w (5e-4), divides the centres' gradient by w before that step
    (`unscale_grad`), so the centres move as if the loss had weight 1.
    """

    CENTER_LR = 0.5

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"CenterLoss needs num_classes >= 1 and dim >= 1, got {num_classes}, {dim}")
        self.num_classes = num_classes
        self.dim = dim
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        diff = upcast(features) - self.centers[targets.long()]
        return diff.pow(2).sum(dim=1).clamp(min=1e-12, max=1e12).mean()

    def make_optimizer(self, lr: float = CENTER_LR) -> torch.optim.SGD:
        """The separate optimiser BoT uses for the centres (plain SGD)."""
        return torch.optim.SGD(self.parameters(), lr=lr)

    def unscale_grad(self, loss_weight: float) -> None:
        """Divide the centres' gradient by the loss weight (call after backward, before the centre step)."""
        if loss_weight <= 0:
            raise ValueError(f"centre loss weight must be > 0, got {loss_weight}")
        if self.centers.grad is not None:
            self.centers.grad.div_(loss_weight)
