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
#' @param method Imputation method of the Python core: `"auto"` (default), `"stimpute"`,
#'   `"stgnet"`, `"knn"` or `"mapping"` (see `spatialimpute.model.registry`). `"auto"`
#'   judges its members on the panel genes of `spe` itself (an inner cross-validation that
#'   hides panel genes), combines them with non-negative weights, smooths the result over
#'   spatial neighbours when that helps, and adds prediction intervals: per gene an 80%
#'   interval of the predicted accuracy, per cell and gene an 80% interval of the imputed
#'   value. Its options go through `...`, e.g. `members = c("knn", "stimpute")` (the
#'   methods it may combine; default all), `reliability = FALSE` (no reliability model and
#'   no intervals: faster), `interval_level = 0.9`. See [ensembleSummary()] for what it
#'   chose.
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
#' @param ... Parameters of the method, passed to the Python core (e.g. `k = 15` for
#'   `"knn"`, `members = "knn"` for `"auto"`, `labels_key = "cell_type"`). Whole numbers
#'   given as doubles are passed as integers; a vector given for an option that takes a
#'   list (e.g. `members`, `knn_neighbors`) is passed as a list even when it has one
#'   element.
#'   `labels_key`, `reference_labels_key` and `library_size_key` name columns of the cell
#'   metadata, which are then sent along.
#'
#' @return The same object as `spe`, same class, with the imputed genes added:
#' \describe{
#'   \item{SingleCellExperiment / SpatialExperiment}{`altExp(spe, name)`, a
#'     `SummarizedExperiment` with assay `logcounts` (genes x cells, log-normalised
#'     scale) and, when the method gives them (`"auto"`), assays `lower` and `upper` (the
#'     per-cell prediction interval of each imputed value); in `rowData(...)` every
#'     per-gene column of the core: `reliability` (predicted accuracy per gene, in
#'     \[0, 1\]), `in_panel`, and for `"auto"` `reliability_lower`, `reliability_upper`
#'     (the interval of the predicted accuracy) and `reliability_<member>` (each ensemble
#'     member's predicted accuracy); the run parameters and provenance (for `"auto"`
#'     including what the ensemble chose, in `provenance$auto`) in
#'     `metadata(...)$imputeSpatial`.}
#'   \item{Seurat}{a new assay `name` (imputed values in its `data` layer), the per-gene
#'     columns in its feature meta data (e.g. `spe[[name]][["reliability"]]`), the per-cell
#'     interval (when present) as two more assays `<name>_lower` and `<name>_upper` (in
#'     their `data` layer; a Seurat v3/v4 assay has no room for extra layers), and the run
#'     parameters in `spe@tools$imputeSpatial[[name]]`.}
#' }
#' [reliability()], [imputedIntervals()], [ensembleSummary()] and [imputeInfo()] read
#' them back from either kind of object.
#' Nothing else in the object changes. On any error the input is left untouched and the
#' error carries the core's message.
#'
#' @seealso [reliability()], [imputedIntervals()], [ensembleSummary()], [imputeInfo()],
#'   [installSpatialImputePython()]
#' @examples
#' if (spatialImputeAvailable()) {
#'     sim <- simulateSpatialPair(n_cells = 150, n_reference = 200, seed = 1)
#'     # the default method "auto", restricted to the fast kNN member
#'     spe <- imputeSpatial(sim$spatial, sim$reference, members = "knn")
#'     head(reliability(spe, interval = TRUE))
#'     ensembleSummary(spe)
#' }
#' @export
setGeneric("imputeSpatial", function(spe, sce, genes = NULL, method = "auto",
                                     assay.type = "counts", ref.assay.type = "counts",
                                     name = "imputed", seed = 0, device = "auto",
                                     num.threads = NULL, verbose = FALSE, coords = NULL,
                                     ...) {
    standardGeneric("imputeSpatial")
}, signature = c("spe", "sce"))

#' @rdname imputeSpatial
#' @export
setMethod("imputeSpatial", c("SingleCellExperiment", "ANY"),
          function(spe, sce, genes = NULL, method = "auto", assay.type = "counts",
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
          function(spe, sce, genes = NULL, method = "auto", assay.type = "counts",
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
        stop("'method' must be one string: \"auto\", \"stimpute\", \"stgnet\", \"knn\" or ",
             "\"mapping\"; ",
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

#' Whole-number doubles (scalars and plain vectors, not matrices) become integers (Python
#' ints) for the core.
#' @noRd
.as_python_params <- function(dots) {
    if (length(dots) && (is.null(names(dots)) || any(!nzchar(names(dots))))) {
        stop("Extra arguments ('...') must all be named method parameters (e.g. ",
             "n_epochs = 100).", call. = FALSE)
    }
    lapply(dots, function(v) {
        if (is.double(v) && length(v) >= 1L && is.null(dim(v)) && all(is.finite(v)) &&
            all(v == round(v)) && all(abs(v) <= .Machine$integer.max)) {
            stats::setNames(as.integer(v), names(v))
        } else {
            v
        }
    })
}

#' Values of the options in `list_names` as R lists (so that reticulate sends Python lists).
#' @noRd
.as_python_lists <- function(dots, list_names) {
    for (k in intersect(names(dots), list_names)) {
        v <- dots[[k]]
        if (is.atomic(v) && !is.null(v) && is.null(dim(v))) dots[[k]] <- as.list(v)
    }
    dots
}

#' Run the Python core on extracted data and bring the result back to R.
#'
#' @param sp Result of .extract() for the spatial object.
#' @param xy Result of .sce_coords()/.seurat_coords().
#' @param sce The reference object.
#' @param cell_names Column names for the result (the caller's cell names, may be NULL).
#' @return list(mat genes x cells (double, named), genes, row_data (data.frame of the
#'   per-gene columns), layers (named list of genes x cells matrices: `lower`, `upper` when
#'   the method gives them), params).
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
              sections$args, .as_python_lists(dots, .list_options(method)))
    result <- .call_python(si$impute, args)

    say("converting the result back to R")
    res_cells <- .py_index_to_r(result$obs_names)
    if (!identical(res_cells, sp$cells)) {
        stop("Internal error: the core returned cells in a different order or number (",
             length(res_cells), " vs ", length(sp$cells), "). Please report this.",
             call. = FALSE)
    }
    res_genes <- .py_index_to_r(result$var_names)
    mat <- .genes_by_cells(result$X, res_genes, cell_names)
    layers <- list()
    layer_names <- as.character(unlist(reticulate::py_to_r(
        reticulate::import_builtins(convert = FALSE)$list(result$layers$keys()))))
    for (ln in intersect(c("lower", "upper"), layer_names)) {
        layers[[ln]] <- .genes_by_cells(reticulate::py_get_item(result$layers, ln),
                                        res_genes, cell_names)
    }
    row_data <- .var_to_r(result$var, res_genes)
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
    list(mat = mat, genes = res_genes, row_data = row_data, layers = layers, params = params)
}

#' A cells x genes Python matrix as a named genes x cells R matrix (double or dgCMatrix).
#' @noRd
.genes_by_cells <- function(X, genes, cells) {
    mat <- Matrix::t(.py_matrix_to_r(X))
    if (!is.matrix(mat) && !methods::is(mat, "dgCMatrix")) {
        mat <- methods::as(mat, "CsparseMatrix")
    }
    dimnames(mat) <- list(genes, cells)
    mat
}

#' Every per-gene column of an AnnData `var` as a data.frame (numbers as double, booleans
#' as logical, anything else as character), in the order of `var`, rows named by `genes`.
#' `reliability` is always there (NA when the core gave none).
#' @noRd
.var_to_r <- function(var, genes) {
    np <- .py("numpy")
    out <- data.frame(row.names = genes)
    for (col in .py_index_to_r(var$columns)) {
        v <- reticulate::py_get_item(var, col)
        kind <- reticulate::py_to_r(v$dtype$kind)
        out[[col]] <- if (identical(kind, "b")) {
            as.logical(reticulate::py_to_r(np$asarray(v, dtype = "bool")))
        } else if (kind %in% c("i", "u", "f")) {
            as.double(reticulate::py_to_r(np$asarray(v, dtype = np$float64)))
        } else {
            .py_index_to_r(v)
        }
    }
    if (!"reliability" %in% names(out)) {
        out <- cbind(data.frame(reliability = rep(NA_real_, length(genes)), row.names = genes),
                     out)
    }
    out
}

#' Names of the options of a method of the core that take a list (e.g. `members`,
#' `knn_neighbors`, `g1_channels`): R cannot tell a one-element vector from a scalar, so
#' these are sent as Python lists. Empty when the method is unknown (the core then says so).
#' @noRd
.list_options <- function(method) {
    tryCatch({
        reg <- reticulate::import("spatialimpute.model.registry", convert = FALSE)
        cls <- reg$get_method(method)
        builtins <- reticulate::import_builtins(convert = FALSE)
        seq_types <- reticulate::tuple(builtins$list, builtins$tuple)
        out <- character()
        for (part in c("Architecture", "Schedule")) {
            config <- if (part == "Architecture") cls$Architecture() else cls$Schedule()
            values <- config$to_dict()
            keys <- as.character(unlist(reticulate::py_to_r(builtins$list(values$keys()))))
            for (key in keys) {
                value <- reticulate::py_get_item(values, key)
                if (reticulate::py_to_r(builtins$isinstance(value, seq_types))) {
                    out <- c(out, key)
                }
            }
        }
        out
    }, error = function(e) character())
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
