# Where the spatial coordinates of the cells come from.

#' Coordinates and sections of the cells of a SingleCellExperiment / SpatialExperiment.
#'
#' @param x SingleCellExperiment (or SpatialExperiment).
#' @param coords NULL (spatialCoords), character column names of colData,
#'   "reducedDim:<name>", or a numeric matrix with one row per cell.
#' @return list(coords = numeric matrix cells x dims, source = description, sample = the
#'   `sample_id` colData column (one value per tissue section) or NULL).
#' @noRd
.sce_coords <- function(x, coords = NULL) {
    out <- .sce_xy(x, coords)
    cd <- SummarizedExperiment::colData(x)
    if ("sample_id" %in% colnames(cd)) {
        if (anyNA(cd$sample_id)) {
            stop("'spe': colData column 'sample_id' has NA values; give every cell its ",
                 "section.", call. = FALSE)
        }
        out$sample <- as.character(cd$sample_id)
    }
    out
}

#' Sections as an obs column and the core's `sample_key` argument (none for one section).
#' @noRd
.sections_obs <- function(obs, sample, n) {
    if (is.null(sample) || length(unique(sample)) < 2L) return(list(obs = obs, args = list()))
    if (is.null(obs)) obs <- data.frame(row.names = seq_len(n))
    obs[["spatialimpute_section"]] <- as.character(sample)
    list(obs = obs, args = list(sample_key = "spatialimpute_section"))
}

.sce_xy <- function(x, coords = NULL) {
    n <- ncol(x)
    if (is.null(coords)) {
        sc <- SingleCellExperiment::int_colData(x)$spatialCoords
        if (is.null(sc) || NCOL(sc) < 2L) {
            rd <- SingleCellExperiment::reducedDimNames(x)
            hint <- if ("spatial" %in% rd) {
                " This object has a reducedDim \"spatial\": use coords = \"reducedDim:spatial\"."
            } else {
                ""
            }
            stop("'spe': no spatial coordinates found (spatialCoords is empty). Expected ",
                 "a SpatialExperiment with spatialCoords(), or coordinates named with ",
                 "'coords' (colData columns such as coords = c(\"x\", \"y\"), or ",
                 "coords = \"reducedDim:spatial\").", hint, call. = FALSE)
        }
        return(list(coords = .check_coords(as.matrix(sc), n, "spatialCoords"),
                    source = "spatialCoords"))
    }
    if (is.numeric(coords) && is.matrix(coords)) {
        return(list(coords = .check_coords(coords, n, "coords"), source = "matrix"))
    }
    if (!is.character(coords) || anyNA(coords) || length(coords) < 1L) {
        stop("'coords' must be NULL, column names of colData(spe) (e.g. c(\"x\", \"y\")), ",
             "\"reducedDim:<name>\" or a numeric matrix with one row per cell; found ",
             class(coords)[1], ".", call. = FALSE)
    }
    if (length(coords) == 1L && startsWith(coords, "reducedDim:")) {
        rd <- sub("^reducedDim:", "", coords)
        if (!rd %in% SingleCellExperiment::reducedDimNames(x)) {
            stop("'coords' = \"", coords, "\": spe has no reducedDim \"", rd, "\" (found: ",
                 .names_or_none(SingleCellExperiment::reducedDimNames(x)), ").",
                 call. = FALSE)
        }
        m <- as.matrix(SingleCellExperiment::reducedDim(x, rd))
        return(list(coords = .check_coords(m, n, coords), source = coords))
    }
    cd <- SummarizedExperiment::colData(x)
    .df_coords(as.data.frame(cd, optional = TRUE)[, intersect(coords, colnames(cd)),
                                                  drop = FALSE],
               coords, colnames(cd), n, "colData(spe)")
}

#' Coordinates from data.frame columns, with errors naming what is missing.
#' @noRd
.df_coords <- function(df, coords, available, n, where) {
    if (length(coords) < 2L) {
        stop("'coords' must name at least two columns of ", where, " (x and y); found ",
             length(coords), ".", call. = FALSE)
    }
    missing <- setdiff(coords, available)
    if (length(missing)) {
        stop("'coords': column(s) ", paste(sQuote(missing, FALSE), collapse = ", "),
             " not found in ", where, " (found: ", .names_or_none(available), ").",
             call. = FALSE)
    }
    bad <- coords[!vapply(df[coords], is.numeric, logical(1))]
    if (length(bad)) {
        stop("'coords': column(s) ", paste(sQuote(bad, FALSE), collapse = ", "), " of ",
             where, " are not numeric.", call. = FALSE)
    }
    m <- as.matrix(df[coords])
    list(coords = .check_coords(m, n, paste(coords, collapse = ", ")),
         source = paste0(where, ": ", paste(coords, collapse = ", ")))
}

.check_coords <- function(m, n, what) {
    if (!is.numeric(m) || nrow(m) != n || ncol(m) < 2L) {
        stop("Spatial coordinates (", what, ") must be numeric with one row per cell (",
             n, ") and at least 2 columns; found ", if (is.numeric(m)) "" else "non-numeric ",
             nrow(m), " x ", ncol(m), ".", call. = FALSE)
    }
    if (any(!is.finite(m))) {
        stop("Spatial coordinates (", what, ") contain NA/NaN/Inf values (",
             sum(!is.finite(m)), "). Remove those cells or fix the coordinates.",
             call. = FALSE)
    }
    m <- unname(m)
    storage.mode(m) <- "double"
    m
}

.names_or_none <- function(x) {
    if (length(x)) paste(sQuote(x, FALSE), collapse = ", ") else "none"
}

#' Coordinates of the cells of a Seurat object.
#'
#' @param seu Seurat object.
#' @param coords NULL (the only FOV / image), "fov:<name>" (or an image name), or
#'   meta.data column names.
#' @return list(coords, source).
#' @noRd
.seurat_coords <- function(seu, coords = NULL) {
    cells <- colnames(seu)
    n <- length(cells)
    if (is.numeric(coords) && is.matrix(coords)) {
        return(list(coords = .check_coords(coords, n, "coords"), source = "matrix"))
    }
    if (!is.null(coords) && (!is.character(coords) || anyNA(coords) || !length(coords))) {
        stop("'coords' must be NULL, \"fov:<name>\", meta.data column names or a numeric ",
             "matrix with one row per cell; found ", class(coords)[1], ".", call. = FALSE)
    }
    images <- SeuratObject::Images(seu)
    if (is.null(coords) || (length(coords) == 1L &&
                            (startsWith(coords, "fov:") || coords %in% images))) {
        img <- if (is.null(coords)) NULL else sub("^fov:", "", coords)
        if (is.null(img)) {
            if (length(images) == 0L) {
                stop("'spe': the Seurat object has no FOV/image with cell coordinates. ",
                     "Expected an imaging object (e.g. from LoadXenium/LoadVizgen or ",
                     "CreateFOV), or meta.data columns named with coords = c(\"x\", \"y\").",
                     call. = FALSE)
            }
            if (length(images) > 1L) return(.seurat_sections(seu, images))
            img <- images
        }
        if (!img %in% images) {
            stop("'coords' = \"", coords, "\": no such image in the Seurat object (found: ",
                 .names_or_none(images), ").", call. = FALSE)
        }
        tc <- .image_centroids(seu, img)
        idx <- match(cells, tc$cell)
        if (anyNA(idx)) {
            stop("'spe': ", sum(is.na(idx)), " of ", n, " cells have no centroid in image '",
                 img, "' (e.g. ", paste(utils::head(cells[is.na(idx)], 3), collapse = ", "),
                 "). Subset the object to the cells of that image.", call. = FALSE)
        }
        m <- as.matrix(tc$xy[idx, , drop = FALSE])
        return(list(coords = .check_coords(m, n, paste0("image ", img)),
                    source = paste0("image: ", img)))
    }
    md <- seu[[]]
    .df_coords(md[, intersect(coords, colnames(md)), drop = FALSE], coords, colnames(md), n,
               "the Seurat meta.data")
}

#' Centroids of one Seurat image: list(cell = cell names, xy = numeric matrix).
#' @noRd
.image_centroids <- function(seu, img) {
    obj <- seu[[img]]
    tc <- if (methods::is(obj, "FOV")) {
        SeuratObject::GetTissueCoordinates(obj, which = "centroids")
    } else {
        SeuratObject::GetTissueCoordinates(obj)
    }
    tc <- as.data.frame(tc)
    xy <- intersect(c("x", "y"), names(tc))
    if (length(xy) < 2L) xy <- names(tc)[vapply(tc, is.numeric, logical(1))][1:2]
    list(cell = if ("cell" %in% names(tc)) as.character(tc$cell) else rownames(tc),
         xy = as.matrix(tc[, xy, drop = FALSE]))
}

#' Coordinates of a Seurat object with several images (FOVs, sections): each cell takes the
#' centroid of the one image that holds it, and that image is its section.
#' @noRd
.seurat_sections <- function(seu, images) {
    cells <- colnames(seu)
    n <- length(cells)
    m <- matrix(NA_real_, n, 2L)
    sample <- rep(NA_character_, n)
    for (img in images) {
        tc <- .image_centroids(seu, img)
        idx <- match(tc$cell, cells)
        keep <- !is.na(idx)
        if (any(!is.na(sample[idx[keep]]))) {
            stop("'spe': some cells have centroids in several images (", img, " and ",
                 sample[idx[keep]][!is.na(sample[idx[keep]])][1], "). Give each cell one ",
                 "image, or choose one with coords = \"fov:<name>\".", call. = FALSE)
        }
        m[idx[keep], ] <- tc$xy[keep, 1:2]
        sample[idx[keep]] <- img
    }
    if (anyNA(sample)) {
        stop("'spe': ", sum(is.na(sample)), " of ", n, " cells have no centroid in any of the ",
             "images (", .names_or_none(images), "); e.g. ",
             paste(utils::head(cells[is.na(sample)], 3), collapse = ", "), ".", call. = FALSE)
    }
    list(coords = .check_coords(m, n, paste0("images ", paste(images, collapse = ", "))),
         source = paste0("images: ", paste(images, collapse = ", ")), sample = sample)
}
