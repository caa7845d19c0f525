# Reading what the core needs out of SingleCellExperiment / SpatialExperiment / Seurat
# objects, without modifying them.

.is_seurat <- function(x) inherits(x, "Seurat")

.need_seurat <- function() {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) {
        stop("A Seurat object was given but the package 'SeuratObject' is not installed. ",
             "Install it (e.g. install.packages(\"SeuratObject\")).", call. = FALSE)
    }
}

#' Layer (SeuratObject >= 5) or slot (SeuratObject 4) of the default assay.
#' @noRd
.seurat_layer <- function(seu, layer, arg) {
    .need_seurat()
    assay <- SeuratObject::DefaultAssay(seu)
    m <- tryCatch({
        if (utils::packageVersion("SeuratObject") >= "5.0.0") {
            # (looked up at run time: SeuratObject 4 has no LayerData)
            layer_data <- getExportedValue("SeuratObject", "LayerData")
            layer_data(seu[[assay]], layer = layer)
        } else {
            SeuratObject::GetAssayData(seu, assay = assay, slot = layer)
        }
    }, error = function(e) {
        stop("'", arg, "' = \"", layer, "\": the Seurat object's default assay '", assay,
             "' has no such layer (", conditionMessage(e), "). Use e.g. \"counts\" or ",
             "\"data\", or set DefaultAssay() to the assay that holds the counts.",
             call. = FALSE)
    })
    if (is.null(m) || length(m) == 0L) {
        stop("'", arg, "' = \"", layer, "\": layer is empty in the Seurat object's default ",
             "assay '", assay, "'. Use a layer that holds the counts (e.g. \"counts\").",
             call. = FALSE)
    }
    list(mat = m, assay = assay)
}

#' Expression matrix, names and metadata of one input object.
#'
#' @param x SingleCellExperiment / SummarizedExperiment / Seurat.
#' @param assay.type Assay (or Seurat layer) name.
#' @param arg,xarg Names of the user arguments (for errors).
#' @param role "spatial data" or "reference".
#' @return list(mat (genes x cells numeric), genes, cells (unique names for Python),
#'   meta (data.frame of cell metadata), kind, assay).
#' @noRd
.extract <- function(x, assay.type, arg, xarg, role) {
    if (!is.character(assay.type) || length(assay.type) != 1L || is.na(assay.type)) {
        stop("'", arg, "' must be a single assay name; found ",
             if (is.character(assay.type)) paste(length(assay.type), "values") else
                 class(assay.type)[1], ".", call. = FALSE)
    }
    what <- paste0("the ", role, " ('", xarg, "')")
    if (.is_seurat(x)) {
        got <- .seurat_layer(x, assay.type, arg)
        mat <- got$mat
        meta <- x[[]]
        kind <- "Seurat"
        assay <- paste0(got$assay, ":", assay.type)
    } else if (methods::is(x, "SummarizedExperiment")) {
        if (!assay.type %in% SummarizedExperiment::assayNames(x)) {
            stop("'", arg, "' = \"", assay.type, "\": ", what, " has no such assay (found: ",
                 .names_or_none(SummarizedExperiment::assayNames(x)), ").", call. = FALSE)
        }
        mat <- SummarizedExperiment::assay(x, assay.type, withDimnames = TRUE)
        meta <- SummarizedExperiment::colData(x)
        kind <- class(x)[1]
        assay <- assay.type
    } else {
        stop("'", xarg, "' must be a SingleCellExperiment, SpatialExperiment or Seurat ",
             "object; found ", class(x)[1], ".", call. = FALSE)
    }
    mat <- .as_numeric_matrix(mat, arg, what)
    genes <- rownames(mat)
    if (is.null(genes)) genes <- rownames(x)
    if (is.null(genes) || anyNA(genes) || any(!nzchar(genes))) {
        stop("'", xarg, "': ", what, " has no (or empty/NA) gene names. Set rownames() to ",
             "gene symbols or IDs shared by both objects.", call. = FALSE)
    }
    if (anyDuplicated(genes)) {
        dup <- unique(genes[duplicated(genes)])
        stop("'", xarg, "': ", what, " has duplicated gene names (", length(dup), ", e.g. ",
             paste(utils::head(dup, 3), collapse = ", "), "). Make them unique, e.g. with ",
             "rownames(x) <- make.unique(rownames(x)), or aggregate the duplicates.",
             call. = FALSE)
    }
    if (ncol(mat) == 0L || nrow(mat) == 0L) {
        stop("'", xarg, "': ", what, " is empty (", nrow(mat), " genes x ", ncol(mat),
             " cells).", call. = FALSE)
    }
    cells <- colnames(x)
    if (is.null(cells) || anyNA(cells) || anyDuplicated(cells)) {
        cells <- paste0("cell_", seq_len(ncol(mat)))
    }
    list(mat = mat, genes = as.character(genes), cells = as.character(cells),
         meta = meta, kind = kind, assay = assay)
}

#' Columns of cell metadata named by the method's *_key arguments, as a data.frame.
#' @noRd
.obs_columns <- function(meta, keys, xarg, where) {
    keys <- unique(unlist(keys[!vapply(keys, is.null, logical(1))]))
    if (!length(keys)) return(NULL)
    missing <- setdiff(keys, colnames(meta))
    if (length(missing)) {
        stop("Column(s) ", paste(sQuote(missing, FALSE), collapse = ", "), " named by ",
             "the *_key arguments are not in ", where, " of '", xarg, "' (found: ",
             .names_or_none(colnames(meta)), ").", call. = FALSE)
    }
    out <- lapply(keys, function(k) {
        v <- meta[[k]]
        if (!is.atomic(v) && !is.factor(v)) {
            stop("Column '", k, "' of ", where, " of '", xarg, "' must be an atomic vector ",
                 "or factor; found ", class(v)[1], ".", call. = FALSE)
        }
        if (is.factor(v)) v <- droplevels(v)
        v
    })
    names(out) <- keys
    as.data.frame(out, stringsAsFactors = FALSE, optional = TRUE)
}
