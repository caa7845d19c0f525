"""STGNET (docs/algorithms/stgnet.md), one responsibility per module:

- :mod:`.model`: the :class:`STGNET` class, which runs the stages in order;
- :mod:`.config`: its options (:class:`STGNETArchitecture`, :class:`STGNETSchedule`) and presets;
- :mod:`.data`: gene layout, scales, spatial-to-reference alignment, labels, stage-2 targets;
- :mod:`.cache`: the cross-fold cache of the reference stages 1-2.

The stages' maths is in :mod:`spatialimpute.module.stgnet`, their training loop in
:mod:`spatialimpute.module.training`.
"""

from .cache import clear_reference_cache
from .config import PRESETS, STGNETArchitecture, STGNETSchedule
from .data import match_quantiles, stgnet_scale, stgnet_unscale
from .model import STGNET

__all__ = ["PRESETS", "STGNET", "STGNETArchitecture", "STGNETSchedule", "clear_reference_cache", "match_quantiles",
           "stgnet_scale", "stgnet_unscale"]
