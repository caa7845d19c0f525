#' Reliability of imputed genes
#'
#' Returns the per-gene reliability score that [imputeSpatial()] stored: the core's
#' prediction of how well each imputed gene matches its true expression (in \[0, 1\];
#' higher is better). Use it to choose which imputed genes to trust.
#'
#' @param x A `SingleCellExperiment` / `SpatialExperiment` or `Seurat` object returned by
#'   [imputeSpatial()].
#' @param name The `name` used in [imputeSpatial()] (altExp or assay name).
#' @param ... Unused.
#'
#' @return A named numeric vector, one value per imputed gene.
#' @seealso [imputeSpatial()], [imputeInfo()]
#' @examples
#' library(SingleCellExperiment)
#' sce <- SingleCellExperiment(list(counts = matrix(1, 2, 3,
#'     dimnames = list(c("A", "B"), NULL))))
#' imputed <- SummarizedExperiment::SummarizedExperiment(
#'     list(logcounts = matrix(0, 1, 3, dimnames = list("C", NULL))),
#'     rowData = S4Vectors::DataFrame(reliability = 0.8, row.names = "C"))
#' altExp(sce, "imputed") <- imputed
#' reliability(sce)
#' @export
setGeneric("reliability", function(x, name = "imputed", ...) standardGeneric("reliability"))

#' @rdname reliability
#' @export
setMethod("reliability", "SingleCellExperiment", function(x, name = "imputed", ...) {
    ae <- .get_altexp(x, name)
    rel <- SummarizedExperiment::rowData(ae)$reliability
    if (is.null(rel)) {
        stop("altExp(x, \"", name, "\") has no rowData column 'reliability'; was it made ",
             "by imputeSpatial()?", call. = FALSE)
    }
    stats::setNames(as.numeric(rel), rownames(ae))
})

#' @rdname reliability
#' @export
setMethod("reliability", "ANY", function(x, name = "imputed", ...) {
    assay <- .get_seurat_assay(x, name)
    mf <- assay[[]]
    if (!"reliability" %in% colnames(mf)) {
        stop("Assay '", name, "' has no feature meta data column 'reliability'; was it ",
             "made by imputeSpatial()?", call. = FALSE)
    }
    stats::setNames(as.numeric(mf$reliability), rownames(mf))
})

#' Parameters and provenance of an imputation
#'
#' Returns what [imputeSpatial()] recorded about a run: method, genes requested, assays,
#' where the coordinates came from, seed, device, the method's parameters and the core's
#' provenance (version, parameters with defaults, timings, the panel genes used).
#'
#' @inheritParams reliability
#' @return A list.
#' @seealso [imputeSpatial()], [reliability()]
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
