# Moving data across the R <-> Python boundary (reticulate only; never anndata2ri here).
#
# R (Bioconductor, Seurat) stores genes x cells; AnnData stores cells x genes: matrices are
# transposed exactly once, at this boundary. Sparse dgCMatrix objects become scipy CSC
# matrices without densifying; results come back through a hand-written CSC converter
# because reticulate (< 1.36) cannot convert modern scipy sparse classes.

#' Coerce an assay to a numeric genes x cells matrix (dgCMatrix or double matrix).
#'
#' @param x The assay as stored (matrix, Matrix, DelayedArray, ...).
#' @param arg Name of the user argument the assay came from (for errors).
#' @param what Human description of the object (for errors).
#' @noRd
.as_numeric_matrix <- function(x, arg, what) {
    if (is.null(x)) {
        stop("'", arg, "': ", what, " has no such assay.", call. = FALSE)
    }
    if (methods::is(x, "dgCMatrix")) {
        out <- x
    } else if (methods::is(x, "sparseMatrix")) {
        if (methods::is(x, "lsparseMatrix") || methods::is(x, "nsparseMatrix")) {
            .bad_assay(arg, what, class(x)[1])
        }
        out <- methods::as(methods::as(x, "CsparseMatrix"), "generalMatrix")
        out <- methods::as(out, "dMatrix")
    } else if (methods::is(x, "Matrix")) {
        if (!methods::is(x, "dMatrix")) .bad_assay(arg, what, class(x)[1])
        out <- as.matrix(x)
    } else if (is.matrix(x)) {
        if (!is.numeric(x) || is.logical(x)) {
            .bad_assay(arg, what, paste0("a ", typeof(x), " matrix"))
        }
        out <- x
        storage.mode(out) <- "double"
    } else if (methods::is(x, "DelayedArray") || is.data.frame(x)) {
        dense <- as.matrix(x)
        if (!is.numeric(dense) || is.logical(dense)) {
            .bad_assay(arg, what, paste0("a ", typeof(dense), " ", class(x)[1]))
        }
        out <- dense
        storage.mode(out) <- "double"
    } else {
        .bad_assay(arg, what, class(x)[1])
    }
    out
}

.bad_assay <- function(arg, what, found) {
    stop("'", arg, "': the assay of ", what, " must be a numeric matrix (base matrix, ",
         "dgCMatrix or a numeric DelayedArray) of counts; found ", found, ". ",
         "Fix: choose a numeric assay (e.g. 'counts') with '", arg, "'.", call. = FALSE)
}

#' Python helper modules (imported without conversion).
#' @noRd
.py <- function(name) {
    if (is.null(.si_env[[paste0("py_", name)]])) {
        .si_env[[paste0("py_", name)]] <- reticulate::import(name, convert = FALSE)
    }
    .si_env[[paste0("py_", name)]]
}

#' Build an AnnData (cells x genes) from an R genes x cells matrix.
#'
#' @param mat dgCMatrix or double matrix, genes x cells.
#' @param cells Unique cell names (character, length ncol(mat)).
#' @param genes Gene names (character, length nrow(mat)).
#' @param coords NULL or a numeric matrix (cells x dims) stored as obsm["spatial"].
#' @param obs NULL or a data.frame of atomic columns (one row per cell) for obs.
#' @return A Python AnnData object (reticulate reference, no conversion).
#' @noRd
.to_anndata <- function(mat, cells, genes, coords = NULL, obs = NULL) {
    pd <- .py("pandas")
    np <- .py("numpy")
    ad <- .py("anndata")
    X <- if (methods::is(mat, "dgCMatrix")) Matrix::t(mat) else t(mat)
    dimnames(X) <- list(NULL, NULL)
    X <- reticulate::r_to_py(X)
    index <- pd$Index(.py_vector(as.character(cells)), dtype = "object")
    columns <- list()
    if (!is.null(obs)) {
        for (col in names(obs)) {
            v <- obs[[col]]
            columns[[col]] <- if (is.factor(v)) {
                pd$Categorical(.py_vector(as.character(v)),
                               categories = .py_vector(levels(v)))
            } else {
                .py_vector(v)
            }
        }
    }
    obs_df <- pd$DataFrame(reticulate::r_to_py(columns), index = index)
    var_df <- pd$DataFrame(index = pd$Index(.py_vector(as.character(genes)),
                                            dtype = "object"))
    adata <- ad$AnnData(X = X, obs = obs_df, var = var_df)
    if (!is.null(coords)) {
        coords <- unname(as.matrix(coords))
        storage.mode(coords) <- "double"
        reticulate::py_set_item(adata$obsm, "spatial",
                                np$ascontiguousarray(reticulate::r_to_py(coords)))
    }
    adata
}

#' An atomic R vector as a 1-D numpy array (also for length 0 and 1).
#' @noRd
.py_vector <- function(v) {
    np <- .py("numpy")
    if (is.character(v)) {
        return(np$array(reticulate::r_to_py(as.list(v)), dtype = "object"))
    }
    np$atleast_1d(np$asarray(reticulate::r_to_py(v)))
}

#' Convert a Python 2-D matrix (numpy array or scipy sparse) to R, as float64.
#'
#' Sparse inputs become a dgCMatrix through CSC components; dense ones a double matrix.
#' @noRd
.py_matrix_to_r <- function(X) {
    sp <- .py("scipy.sparse")
    np <- .py("numpy")
    if (reticulate::py_to_r(sp$issparse(X))) {
        csc <- sp$csc_matrix(X, dtype = np$float64)
        csc$sort_indices()
        shape <- unlist(reticulate::py_to_r(csc$shape))
        Matrix::sparseMatrix(
            i = as.integer(reticulate::py_to_r(np$asarray(csc$indices, dtype = np$int32))),
            p = as.integer(reticulate::py_to_r(np$asarray(csc$indptr, dtype = np$int32))),
            x = as.double(reticulate::py_to_r(np$asarray(csc$data, dtype = np$float64))),
            dims = as.integer(shape), index1 = FALSE, repr = "C")
    } else {
        out <- reticulate::py_to_r(np$ascontiguousarray(np$asarray(X, dtype = np$float64)))
        if (!is.matrix(out)) out <- matrix(out, nrow = 1L)
        storage.mode(out) <- "double"
        out
    }
}

#' Strings of a pandas Index (obs_names / var_names) as an R character vector.
#' @noRd
.py_index_to_r <- function(index) {
    as.character(unlist(reticulate::py_to_r(index$astype("str")$tolist())))
}

#' A Python object (dict of plain values, numpy scalars/arrays) as an R list, via JSON
#' types so that every value converts.
#' @noRd
.py_plain_to_r <- function(obj) {
    json <- .py("json")
    plain <- reticulate::py_eval(
        "lambda o: o.tolist() if hasattr(o, 'tolist') else str(o)", convert = FALSE)
    text <- json$dumps(obj, default = plain)
    reticulate::py_to_r(json$loads(text))
}
