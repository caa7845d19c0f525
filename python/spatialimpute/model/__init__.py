"""User-facing model classes; see :mod:`spatialimpute.model.registry` for method names."""

from .registry import available_methods, get_method

__all__ = ["available_methods", "get_method"]
