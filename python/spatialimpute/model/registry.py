"""Names of the imputation methods and the classes that implement them (imported lazily)."""

from __future__ import annotations

import importlib

from .._validation import check_choice

#: method name -> "module:Class" (relative to ``spatialimpute.model``)
METHODS = {
    "auto": "auto:AutoImpute",
    "stimpute": "stimpute:StImpute",
    "stgnet": "stgnet:STGNET",
    "knn": "knn:KNNImpute",
    "mapping": "mapping:MappingImpute",
}


def get_method(name: str):
    """Return the model class registered under ``name`` (e.g. ``"stimpute"``)."""
    check_choice(name, "method", list(METHODS))
    module_name, class_name = METHODS[name].split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)


def available_methods() -> list[str]:
    """Names of the registered methods."""
    return list(METHODS)
