#' Impute unmeasured genes in spatial data from a single-cell reference
#'
#' Predicts, for every cell of an imaging-based spatial transcriptomics data set, the
#' expression of genes its panel did not measure, using a single-cell RNA-seq reference
#' that measured them. The work is done by the Python core (`spatialimpute`) through
#' `reticulate`; see [installSpatialImputePython()] to set it up.
#'
#' @param spe The spatial data: a `SpatialExperiment`, a `SingleCellExperiment` whose
#'   coordinates are in `int_colData(spe)$spatialCoords`, in `colData` columns or in a
#'   reducedDim (see `coords`), or a `Seurat` object with an FOV (imaging) image.
#' @param sce The reference: a `SingleCellExperiment` (or any `SummarizedExperiment`) or a
#'   `Seurat` object, with raw counts and gene names shared with `spe`.
#' @param genes Genes to impute (character). `NULL` (default): every reference gene that the
#'   panel lacks. Panel genes may be listed too (their imputation is then a held-out
#'   prediction, useful for validation).
#' @param method Imputation method of the Python core: `"stimpute"` (default), `"stgnet"`
#'   or `"knn"` (see `spatialimpute.model.registry`).
#' @param assay.type Assay of `spe` holding raw counts (for Seurat: the layer/slot of the
#'   default assay).
#' @param ref.assay.type Assay of `sce` holding raw counts (for Seurat: layer/slot).
#' @param name Where the result goes: the `altExp()` name (SingleCellExperiment) or the
#'   assay name (Seurat). An existing entry of that name is replaced.
#' @param seed Random seed (one integer); the same seed and device give the same numbers.
#' @param device `"auto"` (CUDA when available, else CPU), `"cpu"`, `"cuda"` or
#'   `"cuda:<i>"`.
#' @param num.threads Number of CPU threads for the core (`NULL`: leave as is).
#' @param verbose If `TRUE`, report the steps and show the core's progress bars.
#' @param coords Where the coordinates are, when not in `spatialCoords()` (or not in the
#'   Seurat FOV): column names of `colData(spe)` / the Seurat `meta.data` (e.g.
#'   `c("x", "y")`), `"reducedDim:<name>"` (e.g. `"reducedDim:spatial"`), `"fov:<name>"`
#'   for a Seurat image, or a numeric matrix with one row per cell.
#' @param ... Parameters of the method, passed to the Python core (e.g. `n_epochs = 200`,
#'   `labels_key = "cell_type"`). Whole numbers given as doubles are passed as integers.
#'   `labels_key`, `reference_labels_key` and `library_size_key` name columns of the cell
#'   metadata, which are then sent along.
#'
#' @return The same object as `spe`, same class, with the imputed genes added:
#' \describe{
#'   \item{SingleCellExperiment / SpatialExperiment}{`altExp(spe, name)`, a
#'     `SummarizedExperiment` with assay `logcounts` (genes x cells, log-normalised
#'     scale), `rowData(...)$reliability` (predicted accuracy per gene, in \[0, 1\]) and the
#'     run parameters and provenance in `metadata(...)$imputeSpatial`.}
#'   \item{Seurat}{a new assay `name` (imputed values in its `data` layer), the reliability
#'     in its feature meta data (`spe[[name]][["reliability"]]`) and the run parameters in
#'     `spe@tools$imputeSpatial[[name]]`.}
#' }
#' Nothing else in the object changes. On any error the input is left untouched and the
#' error carries the core's message.
#'
#' @seealso [reliability()], [imputeInfo()], [installSpatialImputePython()]
#' @examples
#' if (spatialImputeAvailable()) {
#'     sim <- simulateSpatialPair(n_cells = 150, n_reference = 200, seed = 1)
#'     spe <- imputeSpatial(sim$spatial, sim$reference, method = "knn")
#'     head(reliability(spe))
#' }
#' @export
setGeneric("imputeSpatial", function(spe, sce, genes = NULL, method = "stimpute",
                                     assay.type = "counts", ref.assay.type = "counts",
                                     name = "imputed", seed = 0, device = "auto",
                                     num.threads = NULL, verbose = FALSE, coords = NULL,
                                     ...) {
    standardGeneric("imputeSpatial")
}, signature = c("spe", "sce"))

#' @rdname imputeSpatial
#' @export
setMethod("imputeSpatial", c("SingleCellExperiment", "ANY"),
          function(spe, sce, genes = NULL, method = "stimpute", assay.type = "counts",
                   ref.assay.type = "counts", name = "imputed", seed = 0,
                   device = "auto", num.threads = NULL, verbose = FALSE, coords = NULL,
                   ...) {
    .check_name(name)
    sp <- .extract(spe, assay.type, "assay.type", "spe", "spatial data")
    xy <- .sce_coords(spe, coords)
    res <- .impute_core(sp, xy, sce, genes = genes, method = method,
                        ref.assay.type = ref.assay.type, seed = seed, device = device,
                        num.threads = num.threads, verbose = verbose, dots = list(...),
                        cell_names = colnames(spe))
    .attach_imputed(spe, res, name)
})

#' @rdname imputeSpatial
#' @export
setMethod("imputeSpatial", c("ANY", "ANY"),
          function(spe, sce, genes = NULL, method = "stimpute", assay.type = "counts",
                   ref.assay.type = "counts", name = "imputed", seed = 0,
                   device = "auto", num.threads = NULL, verbose = FALSE, coords = NULL,
                   ...) {
    if (!.is_seurat(spe)) {
        stop("'spe' must be a SpatialExperiment, a SingleCellExperiment with spatial ",
             "coordinates or a Seurat object; found ", class(spe)[1], ".", call. = FALSE)
    }
    .need_seurat()
    .check_name(name)
    if (name %in% SeuratObject::Assays(spe) && identical(name, SeuratObject::DefaultAssay(spe))) {
        stop("'name' = \"", name, "\" is the default assay of 'spe' (the measured data); ",
             "choose another name for the imputed genes.", call. = FALSE)
    }
    sp <- .extract(spe, assay.type, "assay.type", "spe", "spatial data")
    xy <- .seurat_coords(spe, coords)
    res <- .impute_core(sp, xy, sce, genes = genes, method = method,
                        ref.assay.type = ref.assay.type, seed = seed, device = device,
                        num.threads = num.threads, verbose = verbose, dots = list(...),
                        cell_names = colnames(spe))
    .attach_imputed(spe, res, name)
})

.check_name <- function(name) {
    if (!is.character(name) || length(name) != 1L || is.na(name) || !nzchar(name)) {
        stop("'name' must be one non-empty string (where the imputed genes are stored); ",
             "found ", if (is.character(name)) paste(length(name), "value(s)") else
                 class(name)[1], ".", call. = FALSE)
    }
}

#' Validate the scalar arguments of imputeSpatial().
#' @noRd
.check_args <- function(genes, method, seed, device, num.threads, verbose) {
    if (!is.null(genes) && (!is.character(genes) || !length(genes) || anyNA(genes))) {
        stop("'genes' must be NULL or a non-empty character vector of gene names without ",
             "NA; found ", if (is.character(genes)) "an empty or NA-containing vector" else
                 class(genes)[1], ".", call. = FALSE)
    }
    if (!is.character(method) || length(method) != 1L || is.na(method)) {
        stop("'method' must be one string such as \"stimpute\", \"stgnet\" or \"knn\"; ",
             "found ", class(method)[1], " of length ", length(method), ".", call. = FALSE)
    }
    if (!is.numeric(seed) || length(seed) != 1L || is.na(seed) || seed < 0 ||
        seed != round(seed) || seed > .Machine$integer.max) {
        stop("'seed' must be one non-negative whole number; found ",
             paste(format(seed), collapse = ", "), ".", call. = FALSE)
    }
    if (!is.character(device) || length(device) != 1L || is.na(device)) {
        stop("'device' must be one string (\"auto\", \"cpu\", \"cuda\" or \"cuda:<i>\"); ",
             "found ", class(device)[1], ".", call. = FALSE)
    }
    if (!is.null(num.threads) && (!is.numeric(num.threads) || length(num.threads) != 1L ||
                                  is.na(num.threads) || num.threads < 1 ||
                                  num.threads != round(num.threads))) {
        stop("'num.threads' must be NULL or one positive whole number; found ",
             paste(format(num.threads), collapse = ", "), ".", call. = FALSE)
    }
    if (!is.logical(verbose) || length(verbose) != 1L || is.na(verbose)) {
        stop("'verbose' must be TRUE or FALSE.", call. = FALSE)
    }
}

#' Refuse counts with NA/NaN/Inf before they reach the core, naming the assay argument.
#' @noRd
.check_counts <- function(mat, arg, xarg) {
    values <- if (methods::is(mat, "dgCMatrix")) mat@x else mat
    bad <- sum(!is.finite(values))
    if (bad > 0L) {
        stop("'", arg, "': the counts of '", xarg, "' must be finite numbers; found ", bad,
             " NA/NaN/Inf value(s). Replace them (e.g. with 0) or drop the affected cells ",
             "or genes.", call. = FALSE)
    }
}

#' Refuse a reference that shares no gene name with the spatial panel.
#' @noRd
.check_shared_genes <- function(sp_genes, ref_genes, ignore_case) {
    shared <- if (ignore_case) intersect(tolower(sp_genes), tolower(ref_genes)) else
        intersect(sp_genes, ref_genes)
    if (!length(shared)) {
        hint <- if (!ignore_case && length(intersect(tolower(sp_genes), tolower(ref_genes)))) {
            paste0(" Some names match ignoring case: harmonise them, or pass ",
                   "case_insensitive_genes = TRUE if they are the same genes.")
        } else {
            " Use the same gene identifiers (symbols or Ensembl IDs) in both objects."
        }
        stop("'sce': the reference shares no gene names with the panel of 'spe' (e.g. spe: ",
             paste(utils::head(sp_genes, 3), collapse = ", "), "; sce: ",
             paste(utils::head(ref_genes, 3), collapse = ", "), ").", hint, call. = FALSE)
    }
}

#' Whole-number doubles of length one become integers (Python ints) for the core.
#' @noRd
.as_python_params <- function(dots) {
    if (length(dots) && (is.null(names(dots)) || any(!nzchar(names(dots))))) {
        stop("Extra arguments ('...') must all be named method parameters (e.g. ",
             "n_epochs = 100).", call. = FALSE)
    }
    lapply(dots, function(v) {
        if (is.double(v) && length(v) == 1L && !is.na(v) && is.finite(v) &&
            v == round(v) && abs(v) <= .Machine$integer.max) {
            as.integer(v)
        } else {
            v
        }
    })
}

#' Run the Python core on extracted data and bring the result back to R.
#'
#' @param sp Result of .extract() for the spatial object.
#' @param xy Result of .sce_coords()/.seurat_coords().
#' @param sce The reference object.
#' @param cell_names Column names for the result (the caller's cell names, may be NULL).
#' @return list(mat genes x cells (double, named), genes, reliability, in_panel, params).
#' @noRd
.impute_core <- function(sp, xy, sce, genes, method, ref.assay.type, seed, device,
                         num.threads, verbose, dots, cell_names) {
    .check_args(genes, method, seed, device, num.threads, verbose)
    ref <- .extract(sce, ref.assay.type, "ref.assay.type", "sce", "reference")
    dots <- .as_python_params(dots)
    .check_counts(sp$mat, "assay.type", "spe")
    .check_counts(ref$mat, "ref.assay.type", "sce")
    .check_shared_genes(sp$genes, ref$genes, isTRUE(dots$case_insensitive_genes))
    keys <- dots[intersect(names(dots), c("labels_key", "reference_labels_key",
                                          "library_size_key"))]
    keys <- keys[!vapply(keys, is.null, logical(1))]
    for (k in names(keys)) {
        if (!is.character(keys[[k]]) || length(keys[[k]]) != 1L || is.na(keys[[k]])) {
            stop("'", k, "' must be one column name; found ", class(keys[[k]])[1], ".",
                 call. = FALSE)
        }
    }
    sp_where <- if (sp$kind == "Seurat") "the meta.data" else "colData"
    ref_where <- if (ref$kind == "Seurat") "the meta.data" else "colData"
    sp_obs <- .obs_columns(sp$meta, keys[c("labels_key", "library_size_key")], "spe", sp_where)
    ref_keys <- if (!is.null(keys$reference_labels_key)) keys["reference_labels_key"] else
        keys["labels_key"]
    ref_obs <- .obs_columns(ref$meta, ref_keys, "sce", ref_where)

    say <- function(...) if (verbose) message("SpatialImpute: ", ...)
    si <- .si_module()
    say("converting ", length(sp$cells), " spatial cells x ", length(sp$genes),
        " genes and ", length(ref$cells), " reference cells x ", length(ref$genes),
        " genes")
    sections <- .sections_obs(sp_obs, xy$sample, length(sp$cells))
    ad_sp <- .to_anndata(sp$mat, sp$cells, sp$genes, coords = xy$coords, obs = sections$obs)
    ad_ref <- .to_anndata(ref$mat, ref$cells, ref$genes, obs = ref_obs)

    restore <- .set_core_settings(verbose)
    on.exit(restore(), add = TRUE)
    say("running method '", method, "' (seed ", seed, ", device '", device, "')")
    args <- c(list(ad_sp, ad_ref, method = method,
                   genes = if (is.null(genes)) NULL else as.list(genes),
                   seed = as.integer(seed), device = device, spatial_key = "spatial"),
              if (is.null(num.threads)) list() else list(num_threads = as.integer(num.threads)),
              sections$args, dots)
    result <- .call_python(si$impute, args)

    say("converting the result back to R")
    res_cells <- .py_index_to_r(result$obs_names)
    if (!identical(res_cells, sp$cells)) {
        stop("Internal error: the core returned cells in a different order or number (",
             length(res_cells), " vs ", length(sp$cells), "). Please report this.",
             call. = FALSE)
    }
    res_genes <- .py_index_to_r(result$var_names)
    mat <- Matrix::t(.py_matrix_to_r(result$X))
    if (!is.matrix(mat) && !methods::is(mat, "dgCMatrix")) {
        mat <- methods::as(mat, "CsparseMatrix")
    }
    dimnames(mat) <- list(res_genes, cell_names)
    var <- result$var
    np <- .py("numpy")
    var_cols <- .py_index_to_r(var$columns)
    reliability <- if ("reliability" %in% var_cols) {
        as.double(reticulate::py_to_r(np$asarray(reticulate::py_get_item(var, "reliability"),
                                                 dtype = np$float64)))
    } else {
        rep(NA_real_, length(res_genes))
    }
    in_panel <- if ("in_panel" %in% var_cols) {
        as.logical(reticulate::py_to_r(np$asarray(reticulate::py_get_item(var, "in_panel"),
                                                  dtype = "bool")))
    } else {
        NULL
    }
    uns <- result$uns
    provenance <- if (reticulate::py_to_r(uns$`__contains__`("spatialimpute"))) {
        .py_plain_to_r(reticulate::py_get_item(uns, "spatialimpute"))
    } else {
        list()
    }
    params <- list(method = method, genes = genes, assay.type = sp$assay,
                   ref.assay.type = ref$assay, coords = xy$source, seed = seed,
                   device = device, num.threads = num.threads,
                   method_params = dots, provenance = provenance,
                   date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
                   package_version = as.character(utils::packageVersion("SpatialImpute")))
    list(mat = mat, genes = res_genes, reliability = reliability, in_panel = in_panel,
         params = params)
}

#' Temporarily set the core's progress flag; returns a function that restores it.
#' @noRd
.set_core_settings <- function(verbose) {
    settings <- tryCatch(reticulate::import("spatialimpute._settings",
                                            convert = FALSE)$settings,
                         error = function(e) NULL)
    if (is.null(settings) || !reticulate::py_has_attr(settings, "progress")) {
        return(function() invisible(NULL))
    }
    old <- settings$progress
    reticulate::py_set_attr(settings, "progress", isTRUE(verbose))
    function() reticulate::py_set_attr(settings, "progress", old)
}

#' Call a Python function; Python exceptions become R errors with the Python message.
#' @noRd
.call_python <- function(fun, args) {
    tryCatch(do.call(fun, args), error = function(e) {
        stop(.python_error_message(e), call. = FALSE)
    })
}

.python_error_message <- function(e) {
    err <- tryCatch(reticulate::py_last_error(), error = function(e2) NULL)
    if (!is.null(err) && !is.null(err$value) && !is.null(err$type)) {
        type <- sub("^.*\\.", "", as.character(err$type))
        value <- trimws(paste(as.character(err$value), collapse = "\n"))
        return(paste0("SpatialImpute (Python core) ", type, ": ", value))
    }
    msg <- conditionMessage(e)
    msg <- sub("\n*Run `reticulate::py_last_error\\(\\)` for details\\.?\\s*$", "", msg)
    msg <- sub("\n*Detailed traceback:.*$", "", msg)
    paste0("SpatialImpute (Python core): ", trimws(msg))
}
