#' Reliability of imputed genes
#'
#' Returns the per-gene reliability score that [imputeSpatial()] stored: the core's
#' prediction of how well each imputed gene matches its true expression (in \[0, 1\];
#' higher is better). Use it to choose which imputed genes to trust. With
#' `interval = TRUE`, also the interval of that prediction that `method = "auto"` gives
#' (80% by default, see its `interval_level` option).
#'
#' @param x A `SingleCellExperiment` / `SpatialExperiment` or `Seurat` object returned by
#'   [imputeSpatial()].
#' @param name The `name` used in [imputeSpatial()] (altExp or assay name).
#' @param interval If `TRUE`, return a data.frame with the interval of each gene's
#'   reliability (an error if the run has none: only `method = "auto"` with
#'   `reliability = TRUE`, the default, gives one).
#' @param ... Unused.
#'
#' @return With `interval = FALSE`, a named numeric vector, one value per imputed gene.
#'   With `interval = TRUE`, a data.frame with one row per gene (row names = genes) and
#'   columns `reliability`, `lower` and `upper`.
#' @seealso [imputeSpatial()], [imputedIntervals()], [ensembleSummary()], [imputeInfo()]
#' @examples
#' library(SingleCellExperiment)
#' sce <- SingleCellExperiment(list(counts = matrix(1, 2, 3,
#'     dimnames = list(c("A", "B"), NULL))))
#' imputed <- SummarizedExperiment::SummarizedExperiment(
#'     list(logcounts = matrix(0, 1, 3, dimnames = list("C", NULL))),
#'     rowData = S4Vectors::DataFrame(reliability = 0.8, reliability_lower = 0.6,
#'                                    reliability_upper = 0.9, row.names = "C"))
#' altExp(sce, "imputed") <- imputed
#' reliability(sce)
#' reliability(sce, interval = TRUE)
#' @export
setGeneric("reliability", function(x, name = "imputed", interval = FALSE, ...)
    standardGeneric("reliability"))

#' @rdname reliability
#' @export
setMethod("reliability", "SingleCellExperiment", function(x, name = "imputed",
                                                          interval = FALSE, ...) {
    ae <- .get_altexp(x, name)
    .reliability_from(as.data.frame(SummarizedExperiment::rowData(ae), optional = TRUE),
                      rownames(ae), interval,
                      paste0("altExp(x, \"", name, "\") has no rowData column"))
})

#' @rdname reliability
#' @export
setMethod("reliability", "ANY", function(x, name = "imputed", interval = FALSE, ...) {
    assay <- .get_seurat_assay(x, name)
    mf <- assay[[]]
    .reliability_from(mf, rownames(mf), interval,
                      paste0("Assay '", name, "' has no feature meta data column"))
})

.reliability_from <- function(df, genes, interval, where) {
    if (!is.logical(interval) || length(interval) != 1L || is.na(interval)) {
        stop("'interval' must be TRUE or FALSE.", call. = FALSE)
    }
    if (!"reliability" %in% colnames(df)) {
        stop(where, " 'reliability'; was it made by imputeSpatial()?", call. = FALSE)
    }
    rel <- stats::setNames(as.numeric(df$reliability), genes)
    if (!interval) return(rel)
    bounds <- c("reliability_lower", "reliability_upper")
    if (!all(bounds %in% colnames(df))) {
        stop(where, "s 'reliability_lower' / 'reliability_upper': this run gives no ",
             "interval. Intervals come from method = \"auto\" (with reliability = TRUE, ",
             "the default).", call. = FALSE)
    }
    data.frame(reliability = unname(rel), lower = as.numeric(df$reliability_lower),
               upper = as.numeric(df$reliability_upper), row.names = genes)
}

#' Per-cell prediction intervals of imputed values
#'
#' Returns the lower and upper bounds of the prediction interval of every imputed value
#' (genes x cells, on the log-normalised scale of the imputed values; 80% by default, see
#' the `interval_level` option of `method = "auto"`). [imputeSpatial()] stores them as
#' assays `lower` and `upper` of `altExp(x, name)` (SingleCellExperiment /
#' SpatialExperiment) or as the assays `<name>_lower` and `<name>_upper` (Seurat).
#'
#' @inheritParams reliability
#' @return A list with two genes x cells matrices, `lower` and `upper` (an error if the run
#'   has none: only `method = "auto"` with `reliability = TRUE`, the default, gives them).
#' @seealso [imputeSpatial()], [reliability()]
#' @examples
#' library(SingleCellExperiment)
#' sce <- SingleCellExperiment(list(counts = matrix(1, 2, 3,
#'     dimnames = list(c("A", "B"), NULL))))
#' m <- matrix(1, 1, 3, dimnames = list("C", NULL))
#' altExp(sce, "imputed") <- SummarizedExperiment::SummarizedExperiment(
#'     list(logcounts = m, lower = m - 0.5, upper = m + 0.5))
#' imputedIntervals(sce)$lower
#' @export
imputedIntervals <- function(x, name = "imputed") {
    none <- paste0("this run gives no per-cell intervals. They come from method = ",
                   "\"auto\" (with reliability = TRUE, the default).")
    if (.is_seurat(x)) {
        .get_seurat_assay(x, name)
        params <- methods::slot(x, "tools")$imputeSpatial[[name]]
        assays <- .interval_assays(params)
        if (!all(c("lower", "upper") %in% names(assays)) ||
            !all(assays %in% SeuratObject::Assays(x))) {
            stop("No assays '", name, "_lower' / '", name, "_upper': ", none, call. = FALSE)
        }
        return(lapply(assays[c("lower", "upper")], function(a) .seurat_data(x[[a]])))
    }
    ae <- .get_altexp(x, name)
    if (!all(c("lower", "upper") %in% SummarizedExperiment::assayNames(ae))) {
        stop("altExp(x, \"", name, "\") has no assays 'lower' / 'upper': ", none,
             call. = FALSE)
    }
    list(lower = SummarizedExperiment::assay(ae, "lower"),
         upper = SummarizedExperiment::assay(ae, "upper"))
}

#' The `data` of a Seurat assay (SeuratObject 4: slot; 5: layer).
#' @noRd
.seurat_data <- function(assay) {
    if (utils::packageVersion("SeuratObject") >= "5.0.0") {
        layer_data <- getExportedValue("SeuratObject", "LayerData")
        return(layer_data(assay, layer = "data"))
    }
    SeuratObject::GetAssayData(assay, slot = "data")
}

#' What the ensemble of `method = "auto"` chose
#'
#' `method = "auto"` scores each candidate model (each member; the kNN baseline as a small
#' grid of neighbour counts and weightings) on the panel genes of the spatial data, hiding
#' a fold of them at a time, and combines the candidates with non-negative weights fitted
#' to those held-out genes. This returns one row per candidate. The rest of what it chose
#' (the spatial smoothing, the anchor member whose scale the result has, the ensemble's own
#' held-out score, members that failed) is in `imputeInfo(x, name)$provenance$auto`.
#'
#' @inheritParams reliability
#' @return A data.frame with columns `member` (candidate name), `weight` (its weight in the
#'   ensemble; 0 = not used), `inner_spcc` (its mean Spearman correlation with the held-out
#'   panel genes), `inner_seconds` (its time in the inner cross-validation) and `selected`
#'   (`weight > 0`), ordered by decreasing weight.
#' @seealso [imputeSpatial()], [imputeInfo()]
#' @examples
#' if (spatialImputeAvailable()) {
#'     sim <- simulateSpatialPair(n_cells = 150, n_reference = 200, seed = 1)
#'     spe <- imputeSpatial(sim$spatial, sim$reference, method = "auto", members = "knn")
#'     ensembleSummary(spe)
#' }
#' @export
ensembleSummary <- function(x, name = "imputed") {
    info <- imputeInfo(x, name)
    auto <- info$provenance$auto
    members <- auto$members
    if (is.null(members) || !length(members)) {
        method <- info$provenance$method
        if (is.null(method)) method <- info$method
        stop("No ensemble summary under '", name, "': it was made by method '",
             if (is.null(method)) "unknown" else method, "'; only method = \"auto\" has ",
             "one.", call. = FALSE)
    }
    num <- function(m, k) {
        v <- m[[k]]
        if (is.null(v) || !length(v)) NA_real_ else as.numeric(v[[1]])
    }
    out <- data.frame(
        member = names(members),
        weight = vapply(members, num, numeric(1), k = "weight"),
        inner_spcc = vapply(members, num, numeric(1), k = "inner_spcc"),
        inner_seconds = vapply(members, num, numeric(1), k = "inner_seconds"),
        stringsAsFactors = FALSE, row.names = NULL)
    out$selected <- !is.na(out$weight) & out$weight > 0
    out <- out[order(-out$weight, out$member), , drop = FALSE]
    rownames(out) <- NULL
    out
}

#' Parameters and provenance of an imputation
#'
#' Returns what [imputeSpatial()] recorded about a run: method, genes requested, assays,
#' where the coordinates came from, seed, device, the method's parameters and the core's
#' provenance (version, parameters with defaults, timings, the panel genes used). For
#' `method = "auto"`, `$provenance$auto` holds what the ensemble chose: `members` (per
#' candidate its `weight`, `inner_spcc` and `inner_seconds`; as a table:
#' [ensembleSummary()]), `smoothing` (spatial neighbours and strength chosen, with the
#' grid scored), `anchor`, `ensemble_inner_spcc`, `inner_folds`, `inner_cells` and
#' `failed`.
#'
#' @inheritParams reliability
#' @return A list.
#' @seealso [imputeSpatial()], [reliability()], [ensembleSummary()]
#' @export
imputeInfo <- function(x, name = "imputed") {
    if (.is_seurat(x)) {
        .get_seurat_assay(x, name)
        info <- methods::slot(x, "tools")$imputeSpatial[[name]]
    } else if (methods::is(x, "SingleCellExperiment")) {
        info <- S4Vectors::metadata(.get_altexp(x, name))$imputeSpatial
    } else {
        stop("'x' must be a SingleCellExperiment, SpatialExperiment or Seurat object; ",
             "found ", class(x)[1], ".", call. = FALSE)
    }
    if (is.null(info)) {
        stop("No imputeSpatial() run information stored under '", name, "'.", call. = FALSE)
    }
    info
}

.get_altexp <- function(x, name) {
    if (!name %in% SingleCellExperiment::altExpNames(x)) {
        stop("No altExp named '", name, "' (found: ",
             .names_or_none(SingleCellExperiment::altExpNames(x)), "). Run imputeSpatial() ",
             "first, or give the 'name' it used.", call. = FALSE)
    }
    SingleCellExperiment::altExp(x, name)
}

.get_seurat_assay <- function(x, name) {
    if (!.is_seurat(x)) {
        stop("'x' must be a SingleCellExperiment, SpatialExperiment or Seurat object; ",
             "found ", class(x)[1], ".", call. = FALSE)
    }
    .need_seurat()
    if (!name %in% SeuratObject::Assays(x)) {
        stop("No assay named '", name, "' (found: ", .names_or_none(SeuratObject::Assays(x)),
             "). Run imputeSpatial() first, or give the 'name' it used.", call. = FALSE)
    }
    x[[name]]
}
