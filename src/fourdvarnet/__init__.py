"""fourdvarnet: learned variational data assimilation (Fablet et al., JAMES 2021).

The paper's Figure 1 as code: observations ``y`` with mask ``Omega`` and an initial state go in,
a solver ``Gamma`` (fixed-step gradient descent or a learned iterative solver fed with
``grad_x U_Phi``) minimises the variational cost ``U_Phi`` (Eq. 4) built on a prior ``Phi``
(an ODE integration scheme or a GENN), and a reconstruction comes out.

Modules, in the order of the paper: ``dynamics`` (Lorenz systems), ``data`` (twin experiments),
``priors`` (Phi), ``cost`` (U_Phi), ``solvers`` (Gamma), ``training``, ``metrics``, ``evaluate``;
beside them, the rows the learned ones are measured against: ``enks``, ``posterior`` (the Bayes
floor) and ``direct`` (direct learning, ``x_hat = CNN(y)``).
"""

__version__ = "0.1.0"
