# Where the imputed genes go, and the plain SingleCellExperiment that Python's rbridge reads.
# One implementation each: imputeSpatial() and the Python package's .rds bridge
# (spatialimpute.rbridge, through rpy2) both call these.

#' Add an imputation result to the object it belongs to.
#'
#' @param x The spatial object (SingleCellExperiment / SpatialExperiment or Seurat).
#' @param res list(mat = genes x cells matrix, row_data = data.frame of per-gene columns
#'   (or, older form, reliability and in_panel vectors), layers = named list of genes x
#'   cells matrices (`lower`, `upper`; may be empty), params).
#' @param name altExp name (SCE) or assay name (Seurat).
#' @return `x` with `altExp(x, name)` (SCE: assays `logcounts` and the layers, rowData =
#'   the per-gene columns, `metadata()$imputeSpatial`) or assay `name` (Seurat: per-gene
#'   columns in the feature meta data, the layers as assays `<name>_<layer>`, parameters in
#'   `x@tools$imputeSpatial[[name]]`); same class.
#' @noRd
.attach_imputed <- function(x, res, name) {
    mat <- res$mat
    row_data <- .result_row_data(res, rownames(mat))
    layers <- res$layers
    if (is.null(layers)) layers <- list()
    for (ln in names(layers)) {
        if (!identical(dim(layers[[ln]]), dim(mat))) {
            stop("Internal error: layer '", ln, "' of the result is not genes x cells like ",
                 "the imputed values. Please report this.", call. = FALSE)
        }
        dimnames(layers[[ln]]) <- dimnames(mat)
    }
    params <- res$params
    if (.is_seurat(x)) {
        extra <- if (length(layers)) stats::setNames(paste0(name, "_", names(layers)),
                                                     names(layers)) else character()
        default <- SeuratObject::DefaultAssay(x)
        if (any(extra == default)) {
            stop("'name' = \"", name, "\": the interval assay '", extra[extra == default],
                 "' would replace the default assay of 'spe'; choose another name.",
                 call. = FALSE)
        }
        tools <- methods::slot(x, "tools")
        # Interval assays of an earlier run under this name are stale now: drop them.
        stale <- setdiff(.interval_assays(tools$imputeSpatial[[name]]), c(extra, default))
        for (a in intersect(stale, SeuratObject::Assays(x))) x[[a]] <- NULL
        assay <- .seurat_assay(mat, name)
        # CreateAssayObject() may rename features (e.g. "_" -> "-"): keep the order, use its names.
        for (col in names(row_data)) {
            assay[[col]] <- stats::setNames(row_data[[col]], rownames(assay))
        }
        x[[name]] <- assay
        for (ln in names(layers)) x[[extra[[ln]]]] <- .seurat_assay(layers[[ln]], extra[[ln]])
        params$interval_assays <- if (length(extra)) as.list(extra) else NULL
        if (is.null(tools$imputeSpatial)) tools$imputeSpatial <- list()
        tools$imputeSpatial[[name]] <- params
        methods::slot(x, "tools") <- tools
        return(x)
    }
    if (!methods::is(x, "SingleCellExperiment")) {
        stop("Imputed genes can be added to a SingleCellExperiment, SpatialExperiment or ",
             "Seurat object; found ", class(x)[1], ".", call. = FALSE)
    }
    rd <- S4Vectors::DataFrame(row_data, row.names = rownames(mat), check.names = FALSE)
    ae <- SummarizedExperiment::SummarizedExperiment(
        assays = c(list(logcounts = mat), layers), rowData = rd,
        metadata = list(imputeSpatial = params))
    SingleCellExperiment::altExp(x, name) <- ae
    x
}

#' The per-gene columns of a result as a data.frame (reliability first; NA when missing).
#' @noRd
.result_row_data <- function(res, genes) {
    rd <- res$row_data
    if (is.null(rd)) {
        rd <- data.frame(reliability = if (length(res$reliability)) res$reliability else
            rep(NA_real_, length(genes)))
        if (length(res$in_panel)) rd$in_panel <- as.logical(res$in_panel)
    }
    rd <- as.data.frame(rd, optional = TRUE, stringsAsFactors = FALSE)
    if (nrow(rd) != length(genes)) {
        stop("Internal error: the result has ", nrow(rd), " rows of per-gene data for ",
             length(genes), " genes. Please report this.", call. = FALSE)
    }
    if (!"reliability" %in% names(rd)) {
        rd <- cbind(data.frame(reliability = rep(NA_real_, length(genes))), rd)
    }
    rownames(rd) <- genes
    rd
}

#' A genes x cells matrix as a Seurat assay (values in `data`) with a key made from `name`.
#' @noRd
.seurat_assay <- function(mat, name) {
    if (!methods::is(mat, "dgCMatrix")) {
        mat <- methods::as(methods::as(methods::as(mat, "CsparseMatrix"), "generalMatrix"),
                           "dMatrix")
    }
    assay <- suppressWarnings(SeuratObject::CreateAssayObject(data = mat))
    SeuratObject::Key(assay) <- paste0(gsub("[^[:alnum:]]", "", tolower(name)), "_")
    assay
}

#' Names of the interval assays a Seurat run recorded (character(0) when none).
#' @noRd
.interval_assays <- function(params) {
    got <- params$interval_assays
    if (is.null(got)) return(character())
    stats::setNames(as.character(unlist(got)), names(got))
}

#' A SpatialExperiment saved where its package is missing reads as a SingleCellExperiment
#' (SpatialExperiment adds no slots) whose coordinates are also a "spatial" reducedDim, so
#' that they stay visible in the object written back.
#' @noRd
.as_readable <- function(x) {
    if ("SpatialExperiment" %in% class(x) &&
        !requireNamespace("SpatialExperiment", quietly = TRUE)) {
        class(x) <- structure("SingleCellExperiment", package = "SingleCellExperiment")
        xy <- SingleCellExperiment::int_colData(x)$spatialCoords
        if (NCOL(xy) >= 2L && !"spatial" %in% SingleCellExperiment::reducedDimNames(x)) {
            SingleCellExperiment::reducedDim(x, "spatial") <- as.matrix(xy)
        }
    }
    x
}

#' Read an .rds object as a plain SingleCellExperiment for Python's rbridge.
#'
#' The spatial object is read the way [imputeSpatial()] reads it: the assay, the
#' coordinates (spatialCoords, a "spatial" reducedDim, Seurat FOV centroids) and the
#' sections (`sample_id`, Seurat images) become assay `counts`, reducedDim `spatial` and
#' colData `sample_id` of a SingleCellExperiment with only atomic colData / rowData columns.
#'
#' @param path Path of the .rds file.
#' @param assay.type Assay (Seurat: layer); `""` = "counts" when present, else the first.
#' @return list(sce, kind, class, assay, coords (source or NA), logical_cols).
#' @noRd
.rds_for_python <- function(path, assay.type = "") {
    x <- readRDS(path)
    cls <- class(x)[1]
    was_spe <- "SpatialExperiment" %in% class(x)
    x <- .as_readable(x)
    if (!.is_seurat(x) && !methods::is(x, "SummarizedExperiment")) {
        stop("the .rds file holds a '", cls, "' object; expected a SingleCellExperiment, ",
             "SpatialExperiment or Seurat object", call. = FALSE)
    }
    if (!nzchar(assay.type)) {
        an <- if (.is_seurat(x)) "counts" else SummarizedExperiment::assayNames(x)
        assay.type <- if ("counts" %in% an || !length(an)) "counts" else an[1]
    }
    sp <- .extract(x, assay.type, "assay", "path", "object")
    xy <- tryCatch(if (.is_seurat(x)) .seurat_coords(x) else .sce_coords(x),
                   error = function(e) NULL)
    if (is.null(xy) && methods::is(x, "SingleCellExperiment") &&
        "spatial" %in% SingleCellExperiment::reducedDimNames(x)) {
        xy <- .sce_coords(x, "reducedDim:spatial")
    }
    meta <- if (.is_seurat(x)) x[[]] else SummarizedExperiment::colData(x)
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = sp$mat),
        colData = .atomic_df(meta, sp$cells),
        rowData = if (.is_seurat(x)) NULL else .atomic_df(SummarizedExperiment::rowData(x), sp$genes))
    if (!is.null(xy)) {
        coords <- unname(xy$coords)
        storage.mode(coords) <- "double"
        rownames(coords) <- sp$cells
        SingleCellExperiment::reducedDim(sce, "spatial") <- coords
        if (!is.null(xy$sample)) sce$sample_id <- as.character(xy$sample)
    }
    cd <- SummarizedExperiment::colData(sce)
    logical_cols <- names(cd)[vapply(cd, function(v) is.logical(v) && !anyNA(v), logical(1))]
    kind <- if (was_spe) "SpatialExperiment" else if (.is_seurat(x)) "Seurat" else
        if (methods::is(x, "SingleCellExperiment")) "SingleCellExperiment" else "SummarizedExperiment"
    list(sce = sce, kind = kind, class = cls, assay = sp$assay,
         coords = if (is.null(xy)) NA_character_ else xy$source,
         logical_cols = as.character(logical_cols))
}

#' Atomic (and factor) columns of cell or gene metadata as a DataFrame with row names.
#' @noRd
.atomic_df <- function(df, names) {
    df <- as.data.frame(df, optional = TRUE)
    keep <- vapply(df, function(v) (is.atomic(v) || is.factor(v)) && is.null(dim(v)), logical(1))
    df <- df[, keep, drop = FALSE]
    for (col in names(df)) if (is.factor(df[[col]])) df[[col]] <- droplevels(df[[col]])
    if (!ncol(df)) df <- data.frame(row.names = seq_along(names))
    rownames(df) <- names
    S4Vectors::DataFrame(df, check.names = FALSE)
}

#' Write the object of an .rds file with an imputation result added (for Python's rbridge).
#'
#' @param path The original .rds file (read again here).
#' @param out Output path.
#' @param mat Imputed values, genes x cells (cells in the object's order).
#' @param genes Gene names (rows of `mat`).
#' @param reliability,in_panel Per-gene vectors (`in_panel` may be empty); used when
#'   `row_data` is NULL (older callers).
#' @param params_json The run's parameters and provenance as JSON.
#' @param name altExp / assay name.
#' @param row_data NULL or a named list of per-gene vectors (every column of the result's
#'   `var`, in order).
#' @param layers NULL or a named list of genes x cells matrices (`lower`, `upper`).
#' @noRd
.write_imputed_rds <- function(path, out, mat, genes, reliability, in_panel, params_json, name,
                               row_data = NULL, layers = NULL) {
    x <- .as_readable(readRDS(path))
    if (ncol(mat) != ncol(x)) {
        stop("the result has ", ncol(mat), " cells but the original object ", ncol(x),
             call. = FALSE)
    }
    if (.is_seurat(x) && identical(name, SeuratObject::DefaultAssay(x))) {
        stop("name '", name, "' is the default assay of the Seurat object", call. = FALSE)
    }
    dimnames(mat) <- list(as.character(genes), colnames(x))
    params <- if (requireNamespace("jsonlite", quietly = TRUE)) {
        jsonlite::fromJSON(params_json, simplifyVector = TRUE)
    } else {
        list(json = params_json)
    }
    if (!is.null(row_data)) {
        row_data <- as.data.frame(lapply(row_data, function(v) as.vector(v)),
                                  optional = TRUE, stringsAsFactors = FALSE)
    }
    layers <- if (is.null(layers)) list() else as.list(layers)
    res <- list(mat = mat, reliability = as.numeric(reliability),
                in_panel = as.logical(in_panel), row_data = row_data, layers = layers,
                params = params)
    saveRDS(.attach_imputed(x, res, name), out)
    invisible(TRUE)
}
