"""Evolution strategies' update, shared by the searches that optimise a network directly on a scenario's cost
(``place-rl``, ``consolidate-net``): antithetic Gaussian perturbations, centred-rank fitness, Adam
(Salimans et al. 2017)."""

from __future__ import annotations

import numpy as np


def centred_ranks(f: np.ndarray) -> np.ndarray:
    """Each value's rank, scaled to [-0.5, 0.5] (lowest cost first)."""
    r = np.empty(f.size)
    r[np.argsort(f)] = np.arange(f.size)
    return r / (f.size - 1) - 0.5


class EsAdam:
    """The update of a flat weight vector from the costs of its antithetic perturbations."""

    def __init__(self, size: int, sigma: float, lr: float) -> None:
        """Adam's moments at zero for ``size`` weights; ``sigma`` the perturbations' scale, ``lr`` Adam's step."""
        self.m, self.v, self.t = np.zeros(size), np.zeros(size), 0
        self.sigma, self.lr = sigma, lr

    def step(self, theta: np.ndarray, noise: np.ndarray, costs: np.ndarray) -> np.ndarray:
        """The weights after one step: ``noise`` is (pairs, size); ``costs`` the costs of theta + sigma * e and
        theta - sigma * e for each row e, in that order (lower is better)."""
        pairs = noise.shape[0]
        r = centred_ranks(costs).reshape(pairs, 2)
        grad = ((r[:, 0] - r[:, 1])[:, None] * noise).sum(axis=0) / (pairs * self.sigma)
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad**2
        return theta - self.lr * (self.m / (1 - 0.9**self.t)) / (np.sqrt(self.v / (1 - 0.999**self.t)) + 1e-8)
