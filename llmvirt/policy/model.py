"""The learned scorer: a small MLP over (VM, host) candidate features.

Higher score = better host. Infeasible candidates never reach it (the constraint mask
removes them first); among feasible ones the highest score wins. The trunk is shared
so further heads (vCPU pinning, balloon sizing) can be added on the same features.
"""

from __future__ import annotations

import torch
from torch import nn

from llmvirt.policy.features import FEATURES


class PlacementScorer(nn.Module):
    """MLP: features -> trunk -> one score per candidate (the ``place`` head)."""

    def __init__(self, n_features: int = len(FEATURES), hidden: int = 64) -> None:
        """Layers sized by ``n_features`` and ``hidden``."""
        super().__init__()
        self.n_features = n_features
        self.hidden = hidden
        self.trunk = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.place = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores, shape (..., candidates)."""
        return self.place(self.trunk(x)).squeeze(-1)

    def config(self) -> dict[str, int]:
        """Constructor parameters, stored in the checkpoint metadata."""
        return {"n_features": self.n_features, "hidden": self.hidden}


def masked_choice(scores: torch.Tensor, feasible: torch.Tensor) -> int:
    """Index of the best feasible candidate; -1 when none is feasible. Infeasible ones are never chosen."""
    if not bool(feasible.any()):
        return -1
    return int(torch.where(feasible, scores, torch.tensor(float("-inf"))).argmax())
