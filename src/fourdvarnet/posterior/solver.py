"""``PosteriorMeanSolver``: the importance-sampling posterior mean in the project's solver call.

The pipeline's posterior-mean row (the Bayes floor) runs this adapter, so the exact posterior
mean can be scored like any other row. It makes the bank when not given one (``bank``), indexes
it per observed-entry pattern (``index``) and weighs its segments (``estimator``).
"""

from __future__ import annotations

import torch
from torch import nn

from .bank import make_bank
from .estimator import posterior_mean
from .index import build_index, observed_entries


class PosteriorMeanSolver(nn.Module):
    """The importance-sampling posterior mean in the project's solver call (no iteration).

    ``forward(cost, x0, y, mask, n_iter, callback=None)`` takes *normalised* tensors
    ``(B, C, T)`` (``y`` zero where not observed), decodes the observations with ``norm_mean``,
    ``norm_std`` (``y_phys = y * std + mean``), computes ``posterior_mean`` with the bank and
    returns the posterior mean encoded back. ``cost`` and ``n_iter`` are ignored; ``callback(1,
    x_hat)`` is called once. The bank is a tensor (``make_bank``), or made on first use from
    ``bank_params`` (keyword arguments of ``make_bank``); it is a plain attribute, not a buffer,
    so it never enters a state dict. Indexes are cached per observed-entry pattern.

    After each call, ``last`` holds the diagnostics in physical units (the ``posterior_mean``
    dict), ``last_std`` the posterior standard deviation of each entry in normalised units
    (like the returned mean) and ``summary()`` the figures to report.
    """

    def __init__(
        self,
        bank: torch.Tensor | None = None,
        obs_var: float = 2.0,
        norm_mean: float = 0.0,
        norm_std: float = 1.0,
        *,
        bank_params: dict | None = None,
        trunc: float = 20.0,
        batch_size: int = 64,
    ):
        super().__init__()
        if bank is None and bank_params is None:
            raise ValueError("give a bank or bank_params")
        self.bank, self.bank_params = bank, dict(bank_params or {})
        self.obs_var, self.trunc, self.batch_size = float(obs_var), float(trunc), int(batch_size)
        self.norm_mean, self.norm_std = float(norm_mean), float(norm_std)
        self._indexes: dict = {}
        self.last: dict[str, torch.Tensor] | None = None

    def _bank_on(self, device) -> torch.Tensor:
        if self.bank is None:
            self.bank = make_bank(device=device, **self.bank_params)
        if self.bank.device != torch.device(device):
            self.bank = self.bank.to(device)
            self._indexes.clear()
        return self.bank

    def forward(self, cost, x0, y, mask, n_iter, callback=None):
        bank = self._bank_on(y.device)
        y_phys = (y * self.norm_std + self.norm_mean) * mask
        window = y.shape[-1]
        obs = mask.flatten(1).any(1)
        index = None
        if obs.any():
            et, ec = observed_entries(mask[obs])
            key = (window, tuple(et.tolist()), tuple(ec.tolist()))
            if key not in self._indexes:
                self._indexes[key] = build_index(bank, window, et.to(bank.device), ec)
            index = self._indexes[key]
        with torch.no_grad():
            self.last = posterior_mean(
                y_phys.detach(),
                mask.detach(),
                bank,
                self.obs_var,
                window,
                trunc=self.trunc,
                index=index,
                batch_size=self.batch_size,
            )
        x_hat = ((self.last["mean"] - self.norm_mean) / self.norm_std).to(x0.dtype)
        if callback is not None:
            callback(1, x_hat)
        return x_hat

    @property
    def last_std(self) -> torch.Tensor | None:
        """The last call's posterior standard deviation per entry, ``sqrt(E[x^2] - E[x]^2)``
        under the importance weights, in normalised units, float32 ``(B, C, T)``."""
        if self.last is None:
            return None
        return (self.last["var"].sqrt() / self.norm_std).to(torch.float32)

    def summary(self) -> dict[str, float]:
        """The last call's figures: expected R-score (mean posterior variance), ESS, MC error."""
        if self.last is None:
            raise RuntimeError("no call yet")
        r = self.last
        return {
            "expected_rscore": float(r["var"].mean()),
            "ess_min": float(r["ess"].min()),
            "ess_median": float(r["ess"].median()),
            "mc_mse": float(r["mc_mse"].mean()),
            "trunc_bound_max": float(r["trunc_bound"].max()),
        }
