"""The one place user input is checked: spatial + reference AnnData in, :class:`PairedData` out."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data.normalize import library_sizes, log_normalize, normalization_scale
from .data.panel import PanelMatrix
from .data.paired import PairedData

#: A reference needs at least this many cells with counts to be usable.
MIN_REFERENCE_CELLS = 10
#: Largest coordinate magnitude accepted: squared distances must stay far from overflow.
MAX_ABS_COORDINATE = 1e15


class SpatialImputeInputError(ValueError):
    """Bad input: names the argument, what was expected, what was found and how to fix it."""

    def __init__(self, argument: str, expected: str, found: str, fix: str):
        self.argument, self.expected, self.found, self.fix = argument, expected, found, fix
        super().__init__(f"`{argument}`: expected {expected}; found {found}. Fix: {fix}")


class SpatialImputeWarning(UserWarning):
    """Input that can be handled but that the user should know about."""


def _warn(message: str) -> None:
    warnings.warn(message, SpatialImputeWarning, stacklevel=3)


def _preview(items: Sequence, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > n else shown


def check_anndata(adata, argument: str) -> None:
    """Check that ``adata`` is a non-empty AnnData with unique cell and gene names."""
    import anndata

    if not isinstance(adata, anndata.AnnData):
        raise SpatialImputeInputError(
            argument, "an anndata.AnnData (cells x genes)", type(adata).__name__,
            "load your data with anndata.read_h5ad / scanpy, or build AnnData(X=counts, obs=..., var=...)",
        )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise SpatialImputeInputError(
            argument, "at least one cell and one gene", f"shape {adata.shape}", "pass a non-empty object",
        )
    for axis, names, fix in (
        ("gene", adata.var_names, f"{argument}.var_names_make_unique() or aggregate duplicated genes"),
        ("cell", adata.obs_names, f"{argument}.obs_names_make_unique()"),
    ):
        dup = names[names.duplicated()].unique()
        if len(dup):
            raise SpatialImputeInputError(argument, f"unique {axis} names", f"duplicated {axis} names {_preview(dup)}", fix)


def get_matrix(adata, layer: str | None, argument: str):
    """Return ``X`` or ``layers[layer]`` of ``adata`` after checking it is numeric and finite."""
    if layer is None:
        matrix = adata.X
        where = f"{argument}.X"
    else:
        if layer not in adata.layers:
            raise SpatialImputeInputError(
                f"{argument}_layer", f"one of the layers of {argument} ({_preview(list(adata.layers)) or 'none'})",
                repr(layer), "pass layer=None to use X, or the name of the layer that holds raw counts",
            )
        matrix = adata.layers[layer]
        where = f"{argument}.layers[{layer!r}]"
    if matrix is None:
        raise SpatialImputeInputError(argument, "an expression matrix", f"{where} is None", "put counts in X or a layer")
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix)
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
        raise SpatialImputeInputError(argument, "a real numeric matrix", f"{where} of dtype {matrix.dtype}", "convert the counts to float or int")
    values = matrix.data if sp.issparse(matrix) else matrix
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            raise SpatialImputeInputError(
                argument, "finite values", f"{int(bad.sum())} NaN/Inf entries in {where}",
                "replace missing values (e.g. with 0) or drop the affected cells/genes",
            )
    if values.size and values.min() < 0:
        raise SpatialImputeInputError(
            argument, "non-negative counts", f"negative values in {where} (min {values.min():.3g})",
            "pass raw counts (e.g. a 'counts' layer), not scaled or centred data",
        )
    return matrix


def get_coordinates(adata, spatial_key: str) -> np.ndarray:
    """Return the spatial coordinates ``obsm[spatial_key]`` as a float64 (cells x 2 or 3) array."""
    if spatial_key not in adata.obsm:
        raise SpatialImputeInputError(
            "spatial", f"coordinates in spatial.obsm[{spatial_key!r}]",
            f"obsm keys {_preview(list(adata.obsm)) or 'none'}",
            "store cell centroids with spatial.obsm['spatial'] = spatial.obs[['x', 'y']].to_numpy(), "
            "or pass spatial_key= naming the obsm entry that holds them",
        )
    raw = adata.obsm[spatial_key]
    values = raw.to_numpy() if isinstance(raw, pd.DataFrame) else np.asarray(raw)
    try:
        coords = values.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise SpatialImputeInputError(
            "spatial", "numeric coordinates", f"obsm[{spatial_key!r}] of dtype {values.dtype}",
            "convert the coordinate columns to numbers",
        ) from err
    if coords.ndim != 2 or coords.shape[0] != adata.n_obs or coords.shape[1] not in (2, 3):
        raise SpatialImputeInputError(
            "spatial", f"an array of shape ({adata.n_obs}, 2) or ({adata.n_obs}, 3)",
            f"obsm[{spatial_key!r}] of shape {coords.shape}", "store one x, y (, z) row per cell",
        )
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise SpatialImputeInputError(
            "spatial", "finite coordinates for every cell",
            f"{int(bad.sum())} cells with NaN/Inf coordinates (e.g. {_preview(adata.obs_names[bad], 3)})",
            "drop those cells or fill in their centroids",
        )
    largest = float(np.abs(coords).max())
    if largest > MAX_ABS_COORDINATE:
        raise SpatialImputeInputError(
            "spatial", f"coordinates of magnitude at most {MAX_ABS_COORDINATE:.0e}",
            f"obsm[{spatial_key!r}] reaching {largest:.3g}", "rescale the coordinates (e.g. to microns or pixels)",
        )
    return coords


def get_sample_ids(adata, sample_key: str | None) -> np.ndarray:
    """Section code (int64, 0..n_sections-1 in order of appearance) of each cell of ``adata``.

    ``sample_key=None`` puts every cell in section 0.
    """
    if sample_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if sample_key not in adata.obs:
        raise SpatialImputeInputError(
            "sample_key", "a column of spatial.obs naming each cell's section", repr(sample_key),
            f"pass one of {_preview(list(adata.obs.columns)) or 'no columns: add one'}, or sample_key=None for one section",
        )
    values = adata.obs[sample_key]
    missing = values.isna().to_numpy()
    if missing.any():
        raise SpatialImputeInputError(
            "sample_key", "a section for every cell", f"{int(missing.sum())} cells with a missing "
            f"spatial.obs[{sample_key!r}] (e.g. {_preview(adata.obs_names[missing], 3)})",
            "fill in the section of those cells or drop them",
        )
    codes, _ = pd.factorize(values.astype(str), sort=False)
    return codes.astype(np.int64)


def _library_size(adata, matrix, library_size_key: str | None, argument: str) -> np.ndarray:
    if library_size_key is None:
        return library_sizes(matrix)
    if library_size_key not in adata.obs:
        raise SpatialImputeInputError(
            "library_size_key", f"a column of {argument}.obs", repr(library_size_key),
            "pass the name of the obs column that holds each cell's total count, or None",
        )
    column = adata.obs[library_size_key]
    if not (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
        raise SpatialImputeInputError(
            "library_size_key", "a numeric column of total counts", f"{argument}.obs[{library_size_key!r}] of dtype {column.dtype}",
            "store each cell's total count as numbers",
        )
    lib = column.to_numpy(dtype=np.float64, na_value=np.nan)
    own = library_sizes(matrix)
    # A cell's total over all genes cannot be below its total over the genes at hand.
    bad = ~np.isfinite(lib) | (lib < own * (1 - 1e-6)) | ((lib <= 0) & (own > 0)) | (lib < 0)
    if bad.any():
        raise SpatialImputeInputError(
            "library_size_key", f"finite totals >= each cell's own count sum in {argument} (and > 0 for cells with counts)",
            f"{int(bad.sum())} invalid values in {argument}.obs[{library_size_key!r}] "
            f"(e.g. {_preview(lib[bad][:3], 3)} for cells {_preview(adata.obs_names[bad][:3], 3)})",
            "recompute the totals from raw counts over all measured genes, or pass library_size_key=None",
        )
    return lib


def _dense_columns(matrix, columns: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``matrix[rows][:, columns]`` as dense float32 (one copy for dense input)."""
    if sp.issparse(matrix):
        sub = matrix[:, columns] if rows is None else sp.csr_matrix(matrix)[np.flatnonzero(rows)][:, columns]
        return sub.toarray().astype(np.float32, copy=False)
    matrix = np.asarray(matrix)
    sub = matrix[:, columns] if rows is None else matrix[np.ix_(np.flatnonzero(rows), columns)]
    return sub.astype(np.float32, copy=False)


def _warn_if_not_counts(matrix, argument: str) -> None:
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    sample = values[: 100_000]
    if sample.size and np.issubdtype(sample.dtype, np.floating) and not np.allclose(sample, np.round(sample)):
        _warn(
            f"{argument} holds non-integer values; SpatialImpute normalises raw counts itself. "
            f"If these are already normalised, pass the raw counts layer via {argument}_layer=."
        )


def _match_gene_case(spatial_genes: pd.Index, reference_genes: pd.Index, ignore_case: bool) -> tuple[pd.Index, dict]:
    """Spatial gene names, renamed to the reference's spelling when matching ignoring case.

    Returns the (possibly renamed) spatial genes and ``{spatial name: reference name}`` of the
    genes that match only ignoring case. Without ``ignore_case`` nothing is renamed and those
    genes are named in a warning.
    """
    exact = set(reference_genes)
    by_lower: dict[str, list[str]] = {}
    for g in reference_genes:
        by_lower.setdefault(g.lower(), []).append(g)
    taken = set(spatial_genes) & exact
    matches = {}
    for g in spatial_genes:
        if g in exact:
            continue
        candidates = [r for r in by_lower.get(g.lower(), []) if r not in taken]
        if candidates:
            matches[g] = candidates
    if not matches:
        return spatial_genes, {}
    if not ignore_case:
        _warn(
            f"{len(matches)} spatial genes match reference genes only ignoring case "
            f"({_preview([f'{g}~{c[0]}' for g, c in matches.items()], 5)}); they are treated as different genes. "
            "Pass case_insensitive_genes=True if they are the same genes (not, e.g., mouse vs human symbols)"
        )
        return spatial_genes, {}
    ambiguous = {g: c for g, c in matches.items() if len(c) > 1}
    targets = [c[0] for c in matches.values()]
    clashes = sorted({t for t in targets if targets.count(t) > 1})
    if ambiguous or clashes:
        found = ambiguous or {t: [g for g, c in matches.items() if c[0] == t] for t in clashes}
        raise SpatialImputeInputError(
            "case_insensitive_genes", "each gene matching at most one gene of the other dataset ignoring case",
            f"ambiguous matches {_preview([f'{k}: {v}' for k, v in found.items()], 3)}",
            "rename or drop the ambiguous genes, or match names exactly (case_insensitive_genes=False)",
        )
    renamed = {g: c[0] for g, c in matches.items()}
    _warn(f"matched {len(renamed)} spatial genes to reference genes ignoring case: "
          f"{_preview([f'{g}->{r}' for g, r in renamed.items()], 5)}")
    return pd.Index([renamed.get(g, g) for g in spatial_genes]), renamed


def resolve_targets(genes, spatial_genes: pd.Index, reference_genes: pd.Index) -> list[str]:
    """Check the requested target genes, or default to reference genes outside the panel."""
    if genes is None:
        targets = [g for g in reference_genes if g not in set(spatial_genes)]
        if not targets:
            raise SpatialImputeInputError(
                "genes", "reference genes that the spatial panel lacks (the default targets)",
                "every reference gene is already in the panel",
                "pass genes=[...] naming panel genes to hold out for validation, or use a reference with more genes",
            )
        return targets
    if isinstance(genes, str):
        genes = [genes]
    targets = [str(g) for g in genes]
    if not targets:
        raise SpatialImputeInputError("genes", "at least one gene name", "an empty list", "pass genes=None to impute every gene the panel lacks")
    dup = pd.Index(targets)[pd.Index(targets).duplicated()].unique()
    if len(dup):
        raise SpatialImputeInputError("genes", "unique gene names", f"duplicates {_preview(dup)}", "list each gene once")
    ref_set = set(reference_genes)
    missing = [g for g in targets if g not in ref_set]
    if missing:
        lower = {g.lower(): g for g in reference_genes}
        hint = [f"{g}->{lower[g.lower()]}" for g in missing if g.lower() in lower]
        fix = "drop them or use a reference that measures them"
        if hint:
            fix += f" (case differs: {_preview(hint, 3)})"
        raise SpatialImputeInputError(
            "genes", "gene names present in the reference", f"{len(missing)} absent: {_preview(missing)}", fix,
        )
    return targets


def _labels(spatial, reference, labels_key, reference_labels_key, ref_keep):
    ref_key = reference_labels_key if reference_labels_key is not None else labels_key
    if ref_key is None:
        return None, None
    if ref_key not in reference.obs:
        raise SpatialImputeInputError(
            "reference_labels_key" if reference_labels_key is not None else "labels_key",
            "a column of reference.obs", repr(ref_key),
            f"pass the label column of the reference (columns: {_preview(list(reference.obs.columns))})",
        )
    ref_values = reference.obs[ref_key].to_numpy()[ref_keep]
    if pd.isna(ref_values).any():
        raise SpatialImputeInputError(
            "reference_labels_key" if reference_labels_key is not None else "labels_key", "a label for every reference cell", f"missing labels in reference.obs[{ref_key!r}]",
            "fill or drop unlabelled reference cells",
        )
    ref_values = ref_values.astype(str)
    categories = sorted(set(ref_values))
    spatial_labels = None
    if labels_key is not None and labels_key in spatial.obs:
        sp_values = spatial.obs[labels_key].to_numpy()
        if pd.isna(sp_values).any():
            raise SpatialImputeInputError(
                "labels_key", "a label for every spatial cell", f"missing labels in spatial.obs[{labels_key!r}]",
                "fill them, or omit labels_key to let the method transfer labels from the reference",
            )
        sp_values = sp_values.astype(str)
        extra = sorted(set(sp_values) - set(categories))
        if extra:
            _warn(f"spatial labels {_preview(extra)} do not occur in the reference; they are kept as their own classes")
            categories = categories + extra
        spatial_labels = pd.Categorical(sp_values, categories=categories)
    elif labels_key is not None and reference_labels_key is None:
        raise SpatialImputeInputError(
            "labels_key", "a column of spatial.obs", repr(labels_key),
            "pass reference_labels_key= alone to label only the reference, or add the column to spatial.obs",
        )
    return spatial_labels, pd.Categorical(ref_values, categories=categories)


def prepare_pair(
    spatial,
    reference,
    genes=None,
    *,
    spatial_layer: str | None = None,
    reference_layer: str | None = None,
    spatial_key: str = "spatial",
    labels_key: str | None = None,
    reference_labels_key: str | None = None,
    library_size_key: str | None = None,
    sample_key: str | None = None,
    case_insensitive_genes: bool = False,
    keep_counts: bool = True,
) -> PairedData:
    """Validate a spatial + reference pair and align it on feature and target genes.

    Parameters
    ----------
    spatial
        AnnData, spatial cells x panel genes, raw counts in ``X`` or ``spatial_layer``,
        coordinates in ``obsm[spatial_key]``.
    reference
        AnnData, reference cells x genes, raw counts in ``X`` or ``reference_layer``.
    genes
        Genes to impute. ``None``: every reference gene the panel lacks. Panel genes may be
        listed: they are then held out of the model's input (validation).
    spatial_layer, reference_layer
        Layers holding raw counts (default ``X``).
    spatial_key
        ``obsm`` key of the coordinates.
    labels_key, reference_labels_key
        ``obs`` columns with cell labels (the reference column defaults to ``labels_key``).
    library_size_key
        ``spatial.obs`` column with each cell's total count over all measured genes; default
        the row sums of the spatial matrix. Each value must be at least the cell's own count
        sum and positive for cells with counts.
    sample_key
        ``spatial.obs`` column naming each cell's section (sample, FOV, region); cells of
        different sections are never spatial neighbours. Default: one section.
    case_insensitive_genes
        Match spatial genes to reference genes ignoring case when no exact match exists
        (each such pair is reported in a warning, and must be unambiguous). By default
        names match exactly and genes that match only ignoring case are named in a
        warning (mouse ``Gad1`` and human ``GAD1`` are not the same gene).
    keep_counts
        Keep the raw counts beside the log-normalised values (methods that read counts);
        ``False`` sets ``spatial_counts`` and ``reference_counts`` to ``None``.

    Returns
    -------
    PairedData
        Everything the methods need: copies, except the raw counts (the spatial panel, and
        the reference's for methods that read counts), which are read from the input
        matrices on demand (so they must not change while a model uses them); the inputs are
        not modified.
    """
    check_bool(case_insensitive_genes, "case_insensitive_genes")
    for value, name in ((spatial_layer, "spatial_layer"), (reference_layer, "reference_layer"),
                        (labels_key, "labels_key"), (reference_labels_key, "reference_labels_key"),
                        (library_size_key, "library_size_key"), (spatial_key, "spatial_key"),
                        (sample_key, "sample_key")):
        if value is not None and not isinstance(value, str):
            raise SpatialImputeInputError(name, "a string (a key of the AnnData)" + ("" if name == "spatial_key" else " or None"),
                                          f"{value!r} ({type(value).__name__})", "pass the key's name")
    check_anndata(spatial, "spatial")
    check_anndata(reference, "reference")
    sp_matrix = get_matrix(spatial, spatial_layer, "spatial")
    ref_matrix = get_matrix(reference, reference_layer, "reference")
    coords = get_coordinates(spatial, spatial_key)
    sample_ids = get_sample_ids(spatial, sample_key)
    _warn_if_not_counts(sp_matrix, "spatial")
    _warn_if_not_counts(ref_matrix, "reference")

    spatial_genes = pd.Index(spatial.var_names.astype(str))
    reference_genes = pd.Index(reference.var_names.astype(str))
    spatial_genes, case_matches = _match_gene_case(spatial_genes, reference_genes, case_insensitive_genes)
    shared = spatial_genes.intersection(reference_genes, sort=False)
    if len(shared) == 0:
        lower_shared = set(spatial_genes.str.lower()) & set(reference_genes.str.lower())
        fix = "make both objects use the same gene identifiers (symbols or Ensembl IDs)"
        if lower_shared:
            fix += (f"; {len(lower_shared)} names match ignoring case: harmonise the case, or pass "
                    "case_insensitive_genes=True if they are the same genes (not mouse 'Gad1' vs human 'GAD1')")
        raise SpatialImputeInputError(
            "reference", "genes shared with the spatial panel",
            f"no shared genes (spatial e.g. {_preview(spatial_genes, 3)}; reference e.g. {_preview(reference_genes, 3)})", fix,
        )
    targets = resolve_targets(genes, spatial_genes, reference_genes)
    target_set = set(targets)

    ref_lib = library_sizes(ref_matrix)
    ref_keep = ref_lib > 0
    if (~ref_keep).any():
        _warn(f"{int((~ref_keep).sum())} reference cells have no counts and are ignored")
    if ref_keep.sum() < MIN_REFERENCE_CELLS:
        raise SpatialImputeInputError(
            "reference", f"at least {MIN_REFERENCE_CELLS} reference cells with counts",
            f"{int(ref_keep.sum())}", "use a larger scRNA-seq reference",
        )

    sp_lib = _library_size(spatial, sp_matrix, library_size_key, "spatial")
    candidate = [g for g in shared if g not in target_set]
    sp_counts = PanelMatrix(sp_matrix, spatial_genes.get_indexer(candidate))  # read on demand, never copied
    ref_cand = _dense_columns(ref_matrix, reference_genes.get_indexer(candidate), ref_keep)
    silent = (sp_counts.sums(axis=0) == 0) | (ref_cand.sum(axis=0) == 0)
    if silent.any():
        _warn(
            f"{int(silent.sum())} panel genes are all-zero in the spatial data or the reference "
            f"({_preview(np.asarray(candidate)[silent], 3)}) and are not used as model input"
        )
    features = [g for g, s in zip(candidate, silent) if not s]
    if not features:
        raise SpatialImputeInputError(
            "genes", "at least one panel gene left as model input",
            "every shared gene is a target or all-zero", "impute fewer panel genes at a time (e.g. in folds)",
        )
    if silent.any():
        sp_counts = sp_counts.take_genes(~silent)
    empty_cells = sp_counts.sums(axis=1) == 0
    if empty_cells.any():
        _warn(f"{int(empty_cells.sum())} spatial cells have no counts in the panel genes; their imputation rests on no data")

    ref_columns = reference_genes.get_indexer(features + targets)
    ref_values = _dense_columns(ref_matrix, ref_columns, ref_keep)  # normalised in place below: one copy
    silent_targets = ref_values[:, len(features):].sum(axis=0) == 0
    if silent_targets.any():
        _warn(f"{int(silent_targets.sum())} target genes are all-zero in the reference and will be imputed as 0")

    sp_median = float(np.median(sp_lib[sp_lib > 0])) if (sp_lib > 0).any() else 1.0
    ref_median = float(np.median(ref_lib[ref_keep]))
    spatial_labels, reference_labels = _labels(spatial, reference, labels_key, reference_labels_key, ref_keep)
    spatial_X = sp_counts.log_normalized(normalization_scale(sp_lib, sp_median))
    reference_X = log_normalize(ref_values, ref_lib[ref_keep], ref_median, out=ref_values)
    ref_counts = PanelMatrix(ref_matrix, ref_columns, rows=np.flatnonzero(ref_keep))  # read on demand, never copied
    return PairedData(
        cell_names=pd.Index(spatial.obs_names.astype(str)).copy(),
        feature_genes=list(features),
        target_genes=list(targets),
        spatial_X=spatial_X,
        spatial_counts=sp_counts if keep_counts else None,
        spatial_library_size=sp_lib.copy(),
        reference_X=reference_X,
        reference_counts=ref_counts if keep_counts else None,
        reference_library_size=ref_lib[ref_keep].copy(),
        coords=coords.copy(),
        sample_ids=sample_ids,
        target_in_panel=np.array([g in set(spatial_genes) for g in targets], dtype=bool),
        spatial_labels=spatial_labels,
        reference_labels=reference_labels,
        normalization={
            "scheme": "counts / library_size * median(library_size), log1p; per dataset on all its genes",
            "spatial_median_library_size": sp_median,
            "reference_median_library_size": ref_median,
            "spatial_layer": spatial_layer,
            "reference_layer": reference_layer,
            "library_size_key": library_size_key,
            "n_reference_cells_dropped": int((~ref_keep).sum()),
            "case_insensitive_genes": case_insensitive_genes,
            "genes_matched_ignoring_case": case_matches,
        },
    )


def check_choice(value, argument: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable value against a set/dict of choices
        ok = False
    if not ok:
        raise SpatialImputeInputError(argument, f"one of {_preview(list(choices), 10)}", repr(value), f"pass one of {list(choices)}")
    return value


def _bounds(minimum, maximum, inclusive: bool = True) -> str:
    low, high = (">=", "<=") if inclusive else (">", "<")
    parts = ([f"{low} {minimum}"] if minimum is not None else []) + ([f"{high} {maximum}"] if maximum is not None else [])
    return f" {' and '.join(parts)}" if parts else ""


def _check_range(number, value, argument: str, kind: str, minimum, maximum, inclusive: bool) -> None:
    below = minimum is not None and (number < minimum if inclusive else number <= minimum)
    above = maximum is not None and (number > maximum if inclusive else number >= maximum)
    if below or above:
        raise SpatialImputeInputError(
            argument, f"{kind}{_bounds(minimum, maximum, inclusive)}", repr(value),
            f"pass {kind}{_bounds(minimum, maximum, inclusive)}",
        )


def check_int(value, argument: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer (Python or NumPy, not bool) within the bounds.

    Floats (even ``2.0``) and strings (even ``"10"``) are refused: a command line or a
    configuration file parses them first.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SpatialImputeInputError(
            argument, f"an integer{_bounds(minimum, maximum)}", f"{value!r} ({type(value).__name__})",
            f"pass a whole number such as {minimum if minimum is not None else 1}",
        )
    number = int(value)
    _check_range(number, value, argument, "an integer", minimum, maximum, True)
    return number


def check_number(value, argument: str, *, minimum: float | None = None, maximum: float | None = None,
                 inclusive: bool = True) -> float:
    """Check that ``value`` is a finite real number (Python or NumPy, not bool) within the bounds.

    ``inclusive=False`` makes both bounds strict.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpatialImputeInputError(
            argument, f"a number{_bounds(minimum, maximum, inclusive)}", f"{value!r} ({type(value).__name__})",
            "pass a number, e.g. 0.5",
        )
    number = float(value)
    if not np.isfinite(number):
        raise SpatialImputeInputError(argument, "a finite number", repr(value), "pass a finite number")
    _check_range(number, value, argument, "a number", minimum, maximum, inclusive)
    return number


def check_fraction(value, argument: str) -> float:
    """Check that ``value`` is a real number in [0, 1]."""
    return check_number(value, argument, minimum=0.0, maximum=1.0)


def check_bool(value, argument: str) -> bool:
    """Check that ``value`` is a bool (Python or NumPy); ``0``/``1`` or strings are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise SpatialImputeInputError(
            argument, "True or False", f"{value!r} ({type(value).__name__})", "pass True or False",
        )
    return bool(value)
