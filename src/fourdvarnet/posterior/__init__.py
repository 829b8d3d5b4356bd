"""The exact posterior mean of twin-experiment windows (the "Bayes floor") by importance sampling.

The truth of a window is a deterministic trajectory of the true model whose first state is drawn
from the attractor's invariant measure, and the observations add Gaussian noise of variance
``obs_var`` to some entries. Given a window's observations ``y`` (mask ``Omega``), the
minimum-MSE estimator of the window is the posterior mean ``E[x | y]``; its MSE, the posterior
variance averaged over entries, is the lowest R-score any method can reach.

The modules, each importing only those above it:

* ``bank``: the prior as a bank of true trajectories (``make_bank``);
* ``index``: the grid index of the bank's candidates (``build_index``, ``BankIndex``,
  ``observed_entries``) and the lower bounds of the RSS it gives;
* ``screen``: the screening of the index's cells for a batch of windows, with the exact RSS
  of the candidates looked at;
* ``accumulate``: the weighted sums of the kept segments and the result fields;
* ``estimator``: the importance-sampling posterior moments, pruned or brute force
  (``posterior_mean``);
* ``solver``: ``PosteriorMeanSolver``, the estimator in the project's solver call, so the Bayes
  floor can be scored like any other row.
"""

from .bank import INITIAL_STATE, make_bank
from .estimator import posterior_mean
from .index import BankIndex, build_index, observed_entries
from .solver import PosteriorMeanSolver

__all__ = [
    "INITIAL_STATE",
    "BankIndex",
    "PosteriorMeanSolver",
    "build_index",
    "make_bank",
    "observed_entries",
    "posterior_mean",
]
