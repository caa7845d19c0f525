"""The aligned spatial + reference pair every method works on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .panel import PanelMatrix


@dataclass(frozen=True)
class PairedData:
    """Spatial cells and reference cells aligned on one gene order.

    Built by :func:`spatialimpute._validation.prepare_pair`. The spatial panel is read from
    the caller's matrix on demand (:class:`~spatialimpute.data.panel.PanelMatrix`, never
    written to); every other array is a fresh copy. Columns of the reference matrices are
    ``feature_genes`` followed by ``target_genes``.

    Attributes
    ----------
    cell_names
        Spatial cell names in the caller's order.
    feature_genes
        Panel genes used as model input (measured in both datasets, not a target).
    target_genes
        Genes to impute, in the caller's order.
    spatial_X
        Log-normalised spatial expression of the feature genes (cells x features), read as
        float32 arrays: ``spatial_X[cells]``, ``spatial_X[np.ix_(cells, genes)]``,
        ``np.asarray(spatial_X)``.
    spatial_counts
        Raw spatial values of the feature genes, read the same way; ``None`` unless the
        method reads counts (``prepare_pair(keep_counts=True)``).
    spatial_library_size
        Per-cell library size used for normalisation (all genes of the spatial object).
    reference_X
        Log-normalised reference expression, float32 (reference cells x (features + targets)).
    reference_counts
        Raw reference values of the same columns, read like ``spatial_counts``; ``None``
        like it.
    reference_library_size
        Per-cell library size of the reference (all of its genes).
    coords
        Spatial coordinates, float64 (cells x dims).
    sample_ids
        Section of each cell, int64 codes (0 for all cells of a one-section object): cells of
        different sections are never spatial neighbours (see
        :mod:`spatialimpute.data.spatial_graph`).
    target_in_panel
        Boolean per target gene: measured in the spatial object but held out from the model's
        input (a validation target).
    spatial_labels, reference_labels
        Cell labels with one shared category list, or ``None``.
    normalization
        What was done to the inputs (recorded in the result's provenance).
    """

    cell_names: pd.Index
    feature_genes: list[str]
    target_genes: list[str]
    spatial_X: PanelMatrix
    spatial_counts: PanelMatrix | None
    spatial_library_size: np.ndarray
    reference_X: np.ndarray
    reference_counts: PanelMatrix | None
    reference_library_size: np.ndarray
    coords: np.ndarray
    sample_ids: np.ndarray
    target_in_panel: np.ndarray
    spatial_labels: pd.Categorical | None = None
    reference_labels: pd.Categorical | None = None
    normalization: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        """Number of spatial cells."""
        return self.spatial_X.shape[0]

    @property
    def n_reference(self) -> int:
        """Number of reference cells."""
        return self.reference_X.shape[0]

    @property
    def n_features(self) -> int:
        """Number of feature (panel) genes."""
        return len(self.feature_genes)

    @property
    def n_targets(self) -> int:
        """Number of genes to impute."""
        return len(self.target_genes)

    @property
    def n_sections(self) -> int:
        """Number of tissue sections (samples, FOVs, regions)."""
        return int(self.sample_ids.max()) + 1 if self.sample_ids.size else 0

    @property
    def reference_features(self) -> np.ndarray:
        """Reference expression of the feature genes (a view)."""
        return self.reference_X[:, : self.n_features]

    @property
    def reference_targets(self) -> np.ndarray:
        """Reference expression of the target genes (a view)."""
        return self.reference_X[:, self.n_features :]

    @property
    def label_categories(self) -> list[str] | None:
        """The shared label vocabulary, or ``None`` without labels."""
        if self.reference_labels is None:
            return None
        return list(self.reference_labels.categories)

    def subset_cells(self, cells: np.ndarray) -> "PairedData":
        """The same genes and reference for the spatial cells ``cells`` (indices, in that order)."""
        cells = np.asarray(cells, dtype=np.int64)
        labels = self.spatial_labels
        return dataclasses.replace(
            self, cell_names=self.cell_names[cells], spatial_X=self.spatial_X.take_cells(cells),
            spatial_counts=_panel_cells(self.spatial_counts, cells), spatial_library_size=self.spatial_library_size[cells],
            coords=self.coords[cells], sample_ids=self.sample_ids[cells],
            spatial_labels=None if labels is None else labels[cells],
        )

    def hold_out_features(self, heldout: np.ndarray) -> "PairedData":
        """The panel genes ``heldout`` (feature columns) hidden and made the only targets.

        What a method sees in one fold of an inner cross-validation: the other panel genes
        as input, the hidden ones to predict (their measurement stays out of the inputs).
        """
        heldout = np.unique(np.asarray(heldout, dtype=np.int64))
        train = np.setdiff1d(np.arange(self.n_features), heldout)
        columns = np.concatenate([train, heldout])
        return dataclasses.replace(
            self, feature_genes=[self.feature_genes[i] for i in train],
            target_genes=[self.feature_genes[i] for i in heldout],
            spatial_X=self.spatial_X.take_genes(train), spatial_counts=_panel_genes(self.spatial_counts, train),
            reference_X=self.reference_X[:, columns], reference_counts=_panel_copy(self.reference_counts, columns),
            target_in_panel=np.ones(heldout.size, dtype=bool),
        )

    def with_feature_order(self, genes: list[str]) -> "PairedData":
        """The same data with the feature genes (spatial and reference columns) in ``genes`` order."""
        order = pd.Index(self.feature_genes).get_indexer(genes)
        columns = np.concatenate([order, np.arange(self.n_features, self.n_features + self.n_targets)])
        return dataclasses.replace(
            self, feature_genes=list(genes), spatial_X=self.spatial_X.take_genes(order),
            spatial_counts=_panel_genes(self.spatial_counts, order),
            reference_X=self.reference_X[:, columns], reference_counts=_panel_genes(self.reference_counts, columns),
        )


def _panel_cells(panel: PanelMatrix | None, cells: np.ndarray) -> PanelMatrix | None:
    return None if panel is None else panel.take_cells(cells)


def _panel_genes(panel: PanelMatrix | None, genes: np.ndarray) -> PanelMatrix | None:
    return None if panel is None else panel.take_genes(genes)


def _panel_copy(panel: PanelMatrix | None, genes: np.ndarray) -> PanelMatrix | None:
    """The genes ``genes`` of ``panel`` read into memory: a compact fold for a worker process,
    not the whole source matrix."""
    return None if panel is None else PanelMatrix(np.asarray(panel.take_genes(genes)), np.arange(len(genes)))
