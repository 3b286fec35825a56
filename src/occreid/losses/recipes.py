"""Loss pieces several methods assemble the same way: BoT's ID + triplet pair and its optional centre loss
trained by its own optimiser (used by BoT and OCNet)."""

from __future__ import annotations

import torch
from torch import nn

from occreid.losses.center import CenterLoss
from occreid.losses.classification import cross_entropy_ls
from occreid.losses.global_batch import global_batch_triplet


class IdTripletCenterLoss(nn.Module):
    """Base of a method loss built from BoT's terms: CE-LS on logits, batch-hard triplet on the features
    before the BNNeck, and, when `center_weight` > 0, w * centre loss whose centres have their own SGD
    (`build_optimizer`, lr `center_lr`) with the gradient divided by w before that step (`before_step`).
    """

    own_optimizer = True

    def __init__(
        self,
        num_classes: int,
        center_dim: int,
        ce_epsilon: float = 0.1,
        triplet_margin: float | None = 0.3,
        center_weight: float = 0.0,
        center_lr: float = CenterLoss.CENTER_LR,
    ) -> None:
        super().__init__()
        self.ce_epsilon, self.triplet_margin = ce_epsilon, triplet_margin
        self.center_weight, self.center_lr = center_weight, center_lr
        self.center = CenterLoss(num_classes, center_dim) if center_weight > 0 else None

    def id_triplet(
        self, logits: torch.Tensor, features: torch.Tensor, pids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE-LS of the logits, batch-hard triplet of the features over the global batch)."""
        return (
            cross_entropy_ls(logits, pids, self.ce_epsilon),
            global_batch_triplet(features, pids, self.triplet_margin),
        )

    def finish(
        self, total: torch.Tensor, terms: dict[str, torch.Tensor], features: torch.Tensor, pids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Add w * centre(features) as term "center" when the centre loss is on; detach the logged terms."""
        if self.center is not None:
            terms["center"] = self.center(features, pids)
            total = total + self.center_weight * terms["center"]
        return total, {k: v.detach() for k, v in terms.items()}

    def build_optimizer(self) -> torch.optim.Optimizer | None:
        return self.center.make_optimizer(self.center_lr) if self.center is not None else None

    def before_step(self) -> None:
        if self.center is not None:
            self.center.unscale_grad(self.center_weight)
