# Toy data with a planted answer, built in R (no Python needed to build them).
#
# Two cell types split the tissue at x = 0.5. Panel genes P01-P05 mark type A, P06-P10
# type B; the reference also measures targets T1 (type A marker), T2 (type B marker) and
# T3 (flat). A correct imputation gives T1 high on the left half of the tissue and T2 high
# on the right half.

make_counts <- function(mu) {
    matrix(stats::rpois(length(mu), mu), nrow(mu), ncol(mu), dimnames = dimnames(mu))
}

toy_means <- function(type, genes) {
    base <- 2
    mu <- matrix(base, length(genes), length(type), dimnames = list(genes, NULL))
    a <- type == "A"
    mu[intersect(genes, c(sprintf("P%02d", 1:5), "T1")), a] <- 30
    mu[intersect(genes, c(sprintf("P%02d", 6:10), "T2")), !a] <- 30
    mu[intersect(genes, "T3"), ] <- 8
    mu
}

make_toy_pair <- function(n_cells = 120, n_ref = 160, seed = 1, sparse = FALSE) {
    set.seed(seed)
    panel <- sprintf("P%02d", 1:10)
    all_genes <- c(panel, "T1", "T2", "T3")
    xy <- cbind(x = stats::runif(n_cells), y = stats::runif(n_cells))
    type <- ifelse(xy[, "x"] < 0.5, "A", "B")
    sp_counts <- make_counts(toy_means(type, panel))
    colnames(sp_counts) <- sprintf("cell%03d", seq_len(n_cells))
    ref_type <- rep(c("A", "B"), length.out = n_ref)
    ref_counts <- make_counts(toy_means(ref_type, all_genes))
    colnames(ref_counts) <- sprintf("ref%03d", seq_len(n_ref))
    truth <- toy_means(type, all_genes)
    colnames(truth) <- colnames(sp_counts)
    if (sparse) {
        sp_counts <- methods::as(sp_counts, "CsparseMatrix")
        ref_counts <- methods::as(ref_counts, "CsparseMatrix")
    }
    rownames(xy) <- colnames(sp_counts)
    list(sp_counts = sp_counts, ref_counts = ref_counts, xy = xy, type = type,
         ref_type = ref_type, truth = log1p(truth))
}

toy_sce_spatial <- function(toy) {
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = toy$sp_counts),
        colData = S4Vectors::DataFrame(x = toy$xy[, "x"], y = toy$xy[, "y"],
                                       cell_type = toy$type, row.names = colnames(toy$sp_counts)))
    SingleCellExperiment::int_colData(sce)$spatialCoords <- toy$xy
    sce
}

toy_sce_coldata <- function(toy) {
    sce <- toy_sce_spatial(toy)
    SingleCellExperiment::int_colData(sce)$spatialCoords <- NULL
    sce
}

toy_sce_reference <- function(toy) {
    SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = toy$ref_counts),
        colData = S4Vectors::DataFrame(cell_type = toy$ref_type,
                                       row.names = colnames(toy$ref_counts)))
}

toy_seurat_spatial <- function(toy) {
    counts <- methods::as(toy$sp_counts, "CsparseMatrix")
    counts <- methods::as(counts, "generalMatrix")
    seu <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts, assay = "RNA"))
    seu$cell_type <- toy$type
    seu$x <- toy$xy[, "x"]
    seu$y <- toy$xy[, "y"]
    cents <- SeuratObject::CreateCentroids(data.frame(x = toy$xy[, "x"], y = toy$xy[, "y"],
                                                      cell = colnames(counts)))
    fov <- SeuratObject::CreateFOV(coords = list(centroids = cents), type = "centroids",
                                   assay = "RNA", key = "fov_")
    seu[["fov"]] <- fov
    seu
}

toy_seurat_reference <- function(toy) {
    counts <- methods::as(methods::as(toy$ref_counts, "CsparseMatrix"), "generalMatrix")
    seu <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts, assay = "RNA"))
    seu$cell_type <- toy$ref_type
    seu
}

# Python core present? Under CI=true a missing core is a failure, not a skip.
skip_if_no_core <- function() {
    if (isTRUE(spatialImputeAvailable())) return(invisible(TRUE))
    msg <- paste0("the Python core 'spatialimpute' is not available (set RETICULATE_PYTHON ",
                  "to a Python that has it)")
    if (identical(tolower(Sys.getenv("CI")), "true")) {
        testthat::fail(paste("CI=true and", msg))
        testthat::skip("core missing (failure recorded above)")
    }
    testthat::skip(msg)
}

# Methods the Python core registers and can import, each with parameters that keep tests fast.
core_methods <- function() {
    reg <- reticulate::import("spatialimpute.model.registry")
    methods <- unlist(reg$available_methods())
    out <- list()
    for (m in methods) {
        cls <- tryCatch(reg$get_method(m), error = function(e) NULL)
        if (is.null(cls)) next
        # Every option of the method's two configurations, with its default value.
        defaults <- tryCatch(c(cls$Architecture()$to_dict(), cls$Schedule()$to_dict()),
                             error = function(e) list())
        out[[m]] <- fast_params(defaults)
    }
    out
}

# Parameters that keep a test run short: known ones per method (kept only when the method
# still has them), plus any other integer epoch/iteration/step count shrunk to 3.
fast_params <- function(defaults) {
    known <- list(
        # auto: the kNN member only, one neighbour count (its grid is then 2 candidates)
        members = "knn", knn_neighbors = 15L,
        # stimpute
        ae_epochs = 2L, ae_steps = 2L, em_rounds = 1L, gnn_steps = 5L, reliability_steps = 5L,
        k = 15L,
        # stgnet: a tiny but complete schedule (every stage runs)
        s1_steps = 5L, s2_steps = 5L, s3_steps = 5L, s2_panel_steps = 5L, batch_size = 50L,
        s5_epochs = 10L, g1_channels = c(8L, 4L), unet_ngf = 4L, unet_levels = 2L,
        unet_map = 8L, critic_map = 8L, s5_hidden = c(32L, 16L))
    fast <- known[intersect(names(known), names(defaults))]
    for (k in setdiff(names(defaults), names(fast))) {
        v <- defaults[[k]]
        if (is.numeric(v) && length(v) == 1L && v == round(v) && v > 3 &&
            grepl("epoch|iter|steps", k) && !grepl("^min_", k)) {
            fast[[k]] <- 3L
        }
    }
    fast
}

# Pearson correlation of imputed vs planted truth for one gene.
gene_cor <- function(imputed, truth, gene) {
    stats::cor(as.numeric(imputed[gene, ]), as.numeric(truth[gene, colnames(imputed)]))
}
