"""``method="auto"``: a self-validating ensemble of the methods (see :class:`AutoImpute`).

One responsibility per module: :mod:`.config` (options and candidates), :mod:`.inner_cv`
(held-out predictions of the panel genes), :mod:`.stacking` (weights), :mod:`.refine`
(spatial smoothing), :mod:`.intervals` (calibrated reliability and prediction intervals),
:mod:`.model` (the model class that runs them).
"""

from .model import AutoImpute, ensemble_summary

__all__ = ["AutoImpute", "ensemble_summary"]
