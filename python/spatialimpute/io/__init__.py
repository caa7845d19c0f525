"""Reading spatial data where users keep it, and writing results back in kind.

- :func:`read_spatial`: ``.h5ad``, ``.rds`` (R objects, through :mod:`spatialimpute.rbridge`),
  a SpatialData ``.zarr`` store, or a Xenium / MERSCOPE / CosMx output folder (through the
  ``spatialdata-io`` readers; extra ``[spatialdata]``).
- :mod:`spatialimpute.io.sdata`: a SpatialData table as the AnnData the core takes (cell
  centroids, sections) and the imputed genes as a new table annotating the same element.
- :func:`write_result`: the imputed AnnData as ``.h5ad``, ``.rds`` or ``.zarr``.
"""

from __future__ import annotations

from .read import PLATFORMS, SpatialInput, detect_platform, read_spatial
from .write import write_result

__all__ = ["PLATFORMS", "SpatialInput", "detect_platform", "read_spatial", "write_result"]
