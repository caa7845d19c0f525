"""Data layer: the aligned spatial/reference pair, normalisation, neighbour search and graphs."""

from .paired import PairedData

__all__ = ["PairedData"]
