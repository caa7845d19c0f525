"""Options of :class:`~spatialimpute.model.auto.AutoImpute` and the candidates its members expand to."""

from __future__ import annotations

import dataclasses

from .._config import Config, boolean, choice_list, integer, integer_list, number

#: Methods the ensemble can draw on (names of :mod:`spatialimpute.model.registry`).
MEMBERS = ("knn", "mapping", "stimpute", "stgnet")


@dataclasses.dataclass(frozen=True)
class AutoArchitecture(Config):
    """Options of :class:`~spatialimpute.model.auto.AutoImpute`.

    ``members``: the methods to choose among and combine (each in its default preset; the
    kNN baseline as the grid ``knn_neighbors`` x uniform/similarity weights); ``inner_folds``:
    folds over the panel genes of the inner cross-validation; ``inner_cells``: spatial cells
    it uses (a random sample above this); ``interval_level``: coverage of the per-gene and
    per-cell prediction intervals; ``reliability``: fit the reliability model and the
    intervals (NaN reliability and no interval layers otherwise).
    """

    members: tuple = choice_list(MEMBERS, MEMBERS)
    knn_neighbors: tuple = integer_list((15, 50))
    inner_folds: int = integer(3, minimum=2)
    inner_cells: int = integer(10000, minimum=20)
    interval_level: float = number(0.8, minimum=0.5, maximum=0.99)
    reliability: bool = boolean(True)


@dataclasses.dataclass(frozen=True)
class AutoSchedule(Config):
    """The ensemble trains its members with their own schedules; it has none of its own."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One model the inner cross-validation scores: a registered method with fixed options."""

    name: str
    method: str
    options: tuple = ()

    def kwargs(self) -> dict:
        """The options as keyword arguments."""
        return dict(self.options)


def candidates(architecture: AutoArchitecture) -> list[Candidate]:
    """The candidate models of the members: kNN expands to its grid, the others are one each."""
    out = []
    for member in architecture.members:
        if member == "knn":
            out.extend(Candidate(f"knn_k{k}_{w}", "knn", (("k", k), ("weighting", w)))
                       for k in architecture.knn_neighbors for w in ("uniform", "similarity"))
        else:
            out.append(Candidate(member, member))
    return out
