#' Simulate a spatial data set and a matching single-cell reference
#'
#' Calls the Python core's simulator (`spatialimpute.datasets.simulate_pair`) and returns
#' Bioconductor objects: a tissue with layered spatial domains and cell types, a spatial
#' panel measuring a subset of the genes, a scRNA-seq reference measuring all of them, and
#' the true expression of every gene in the spatial cells (to check an imputation).
#'
#' @param n_cells Number of spatial cells.
#' @param n_reference Number of reference cells.
#' @param n_genes Genes in the reference.
#' @param n_panel Genes measured by the spatial panel.
#' @param seed Random seed.
#' @param ... Further arguments of `simulate_pair` (e.g. `n_cell_types`, `n_domains`,
#'   `spatial_depth`, `reference_depth`, `batch_shift`).
#'
#' @return A list with
#' \describe{
#'   \item{spatial}{`SingleCellExperiment` (a `SpatialExperiment` when that package is
#'     installed): panel genes x cells, assay `counts`, coordinates in `spatialCoords`,
#'     colData `cell_type` and `domain`.}
#'   \item{reference}{`SingleCellExperiment`: all genes x reference cells, assay `counts`,
#'     colData `cell_type`.}
#'   \item{truth}{`SingleCellExperiment`: all genes x spatial cells, assay `logcounts` (the
#'     log-normalised true expression), rowData `in_panel`.}
#' }
#' @examples
#' if (spatialImputeAvailable()) {
#'     sim <- simulateSpatialPair(n_cells = 100, n_reference = 150, seed = 1)
#'     sim$spatial
#' }
#' @export
simulateSpatialPair <- function(n_cells = 1000, n_reference = 1500, n_genes = 200,
                                n_panel = 60, seed = 0, ...) {
    si <- .si_module()
    datasets <- reticulate::import("spatialimpute.datasets", convert = FALSE)
    args <- c(list(n_spatial = n_cells, n_reference = n_reference, n_genes = n_genes,
                   n_panel = n_panel, seed = seed), list(...))
    args <- .as_python_params(args)
    out <- .call_python(datasets$simulate_pair, args)
    sp <- .anndata_to_sce(reticulate::py_get_item(out, 0L), "counts")
    ref <- .anndata_to_sce(reticulate::py_get_item(out, 1L), "counts")
    truth <- .anndata_to_sce(reticulate::py_get_item(out, 2L), "logcounts")
    coords <- .py_matrix_to_r(reticulate::py_get_item(
        reticulate::py_get_item(out, 0L)$obsm, "spatial"))
    colnames(coords) <- c("x", "y")[seq_len(ncol(coords))]
    rownames(coords) <- colnames(sp)
    if (requireNamespace("SpatialExperiment", quietly = TRUE)) {
        sp <- SpatialExperiment::SpatialExperiment(
            assays = SummarizedExperiment::assays(sp), colData = SummarizedExperiment::colData(sp),
            spatialCoords = coords)
    } else {
        SingleCellExperiment::int_colData(sp)$spatialCoords <- coords
    }
    list(spatial = sp, reference = ref, truth = truth)
}

#' A simple AnnData (X, obs of atomic columns, var of atomic columns) as a
#' SingleCellExperiment with X as assay `assay`.
#' @noRd
.anndata_to_sce <- function(adata, assay) {
    mat <- Matrix::t(.py_matrix_to_r(adata$X))
    if (methods::is(mat, "sparseMatrix")) mat <- methods::as(mat, "CsparseMatrix")
    cells <- .py_index_to_r(adata$obs_names)
    genes <- .py_index_to_r(adata$var_names)
    dimnames(mat) <- list(genes, cells)
    SingleCellExperiment::SingleCellExperiment(
        assays = stats::setNames(list(mat), assay),
        colData = .pandas_to_df(adata$obs, cells),
        rowData = .pandas_to_df(adata$var, genes))
}

#' Atomic columns of a pandas DataFrame as an S4Vectors DataFrame (categoricals -> factor).
#' @noRd
.pandas_to_df <- function(df, row_names) {
    cols <- .py_index_to_r(df$columns)
    np <- .py("numpy")
    out <- S4Vectors::DataFrame(row.names = row_names)
    for (col in cols) {
        s <- reticulate::py_get_item(df, col)
        dtype <- reticulate::py_str(s$dtype)
        if (dtype == "category") {
            v <- factor(.py_index_to_r(s$astype("str")),
                        levels = .py_index_to_r(s$cat$categories))
        } else if (dtype == "bool") {
            v <- as.logical(reticulate::py_to_r(np$asarray(s, dtype = "bool")))
        } else if (grepl("^(int|uint|float)", dtype)) {
            v <- as.numeric(reticulate::py_to_r(np$asarray(s, dtype = np$float64)))
        } else {
            v <- .py_index_to_r(s$astype("str"))
        }
        out[[col]] <- v
    }
    out
}
