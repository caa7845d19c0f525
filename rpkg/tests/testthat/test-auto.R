# method = "auto" (the default): the intervals, per-gene columns and the ensemble's choices
# reach SingleCellExperiment, SpatialExperiment and Seurat objects. Kept fast: the kNN
# member only, one neighbour count.

fast_auto <- list(members = "knn", knn_neighbors = 15, device = "cpu", seed = 1)

test_that("the default method is auto, in the generic and in both methods", {
    expect_identical(formals(imputeSpatial)$method, "auto")
    for (sig in list(c("SingleCellExperiment", "ANY"), c("ANY", "ANY"))) {
        expect_identical(formals(methods::getMethod("imputeSpatial", sig))$method, "auto")
    }
})

test_that("one-element vectors reach list options as lists; whole doubles as integers", {
    dots <- SpatialImpute:::.as_python_params(list(members = "knn", knn_neighbors = c(15, 50),
                                                   k = 10, lr = 0.5))
    expect_identical(dots$knn_neighbors, c(15L, 50L))
    lists <- SpatialImpute:::.as_python_lists(dots, c("members", "knn_neighbors"))
    expect_identical(lists$members, list("knn"))
    expect_identical(lists$knn_neighbors, list(15L, 50L))
    expect_identical(lists$k, 10L)
    expect_identical(lists$lr, 0.5)
})

test_that("auto (default) fills the altExp: logcounts, lower, upper, every per-gene column", {
    skip_if_no_core()
    toy <- make_toy_pair(n_cells = 60, n_ref = 80)
    spe <- toy_sce_spatial(toy)
    out <- do.call(imputeSpatial, c(list(spe, toy_sce_reference(toy)), fast_auto))
    expect_s4_class(out, "SingleCellExperiment")
    ae <- SingleCellExperiment::altExp(out, "imputed")
    expect_identical(SummarizedExperiment::assayNames(ae), c("logcounts", "lower", "upper"))
    expect_identical(rownames(ae), c("T1", "T2", "T3"))
    expect_identical(colnames(ae), colnames(spe))
    vals <- as.matrix(SummarizedExperiment::assay(ae, "logcounts"))
    lo <- as.matrix(SummarizedExperiment::assay(ae, "lower"))
    up <- as.matrix(SummarizedExperiment::assay(ae, "upper"))
    expect_true(all(is.finite(lo) & is.finite(up)))
    expect_true(all(lo <= up))
    expect_true(mean(lo <= vals + 1e-6 & vals <= up + 1e-6) > 0.9)
    # The planted answer survives the ensemble: T1 marks the left half.
    expect_gt(gene_cor(vals, toy$truth, "T1"), 0.5)

    rd <- SummarizedExperiment::rowData(ae)
    expect_identical(colnames(rd)[1:4], c("reliability", "in_panel", "reliability_lower",
                                          "reliability_upper"))
    members <- grep("^reliability_knn", colnames(rd), value = TRUE)
    members <- members[!grepl("_(lower|upper)$", members)]
    expect_gte(length(members), 1L)
    # each kept member's predicted accuracy comes with its interval
    expect_true(all(paste0(members, "_lower") %in% colnames(rd)))
    expect_true(all(paste0(members, "_upper") %in% colnames(rd)))
    expect_type(rd$in_panel, "logical")
    expect_false(any(rd$in_panel))

    rel <- reliability(out, interval = TRUE)
    expect_identical(rownames(rel), c("T1", "T2", "T3"))
    expect_identical(colnames(rel), c("reliability", "lower", "upper"))
    expect_equal(rel$lower, as.numeric(rd$reliability_lower))
    expect_equal(reliability(out), stats::setNames(rel$reliability, rownames(rel)))
    iv <- imputedIntervals(out)
    expect_equal(as.matrix(iv$lower), lo)
    expect_equal(as.matrix(iv$upper), up)

    info <- imputeInfo(out)
    expect_identical(info$method, "auto")
    expect_identical(info$provenance$method, "auto")
    expect_identical(unlist(info$provenance$config$architecture$members), "knn")
    expect_false(is.null(info$provenance$auto$smoothing))
    ens <- ensembleSummary(out)
    expect_identical(colnames(ens), c("member", "weight", "inner_spcc", "inner_seconds",
                                      "selected"))
    expect_setequal(ens$member, c("knn_k15_uniform", "knn_k15_similarity"))
    expect_true(all(ens$weight >= 0))
    expect_equal(sum(ens$weight), 1, tolerance = 1e-6)
    expect_identical(ens$selected, ens$weight > 0)
    # reliability_<member> for every member the ensemble kept.
    expect_setequal(sub("^reliability_", "", members), ens$member[ens$selected])
})

test_that("auto on a SpatialExperiment keeps the class; without reliability no intervals", {
    skip_if_no_core()
    skip_if_not_installed("SpatialExperiment")
    toy <- make_toy_pair(n_cells = 60, n_ref = 80)
    spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = toy$sp_counts), spatialCoords = toy$xy)
    out <- do.call(imputeSpatial, c(list(spe, toy_sce_reference(toy)), fast_auto,
                                    list(reliability = FALSE)))
    expect_s4_class(out, "SpatialExperiment")
    ae <- SingleCellExperiment::altExp(out, "imputed")
    expect_identical(SummarizedExperiment::assayNames(ae), "logcounts")
    expect_error(reliability(out, interval = TRUE), "no interval")
    expect_error(imputedIntervals(out), "no assays 'lower'")
    expect_s3_class(ensembleSummary(out), "data.frame")
})

test_that("auto on Seurat: meta features, interval assays, stale ones dropped on re-run", {
    skip_if_no_core()
    skip_if_not_installed("SeuratObject")
    toy <- make_toy_pair(n_cells = 60, n_ref = 80)
    seu <- toy_seurat_spatial(toy)
    out <- do.call(imputeSpatial, c(list(seu, toy_sce_reference(toy)), fast_auto))
    expect_setequal(SeuratObject::Assays(out),
                    c("RNA", "imputed", "imputed_lower", "imputed_upper"))
    expect_identical(SeuratObject::DefaultAssay(out), "RNA")
    mf <- out[["imputed"]][[]]
    expect_true(all(c("reliability", "in_panel", "reliability_lower", "reliability_upper")
                    %in% colnames(mf)))
    rel <- reliability(out, interval = TRUE)
    expect_equal(rel$upper, mf$reliability_upper)
    iv <- imputedIntervals(out)
    vals <- as.matrix(SeuratObject::GetAssayData(out[["imputed"]], slot = "data"))
    expect_identical(dimnames(iv$lower), dimnames(vals))
    expect_true(all(as.matrix(iv$lower) <= as.matrix(iv$upper)))
    expect_identical(unlist(imputeInfo(out)$interval_assays),
                     c(lower = "imputed_lower", upper = "imputed_upper"))
    expect_gte(nrow(ensembleSummary(out)), 1L)
    # A later run without intervals under the same name removes the stale interval assays.
    again <- imputeSpatial(out, toy_sce_reference(toy), method = "knn", k = 15)
    expect_setequal(SeuratObject::Assays(again), c("RNA", "imputed"))
    expect_error(imputedIntervals(again), "no per-cell intervals")
    expect_error(ensembleSummary(again), "method 'knn'")
})

test_that("the .rds writer of the Python bridge carries every column, layer and the provenance", {
    toy <- make_toy_pair(n_cells = 20, n_ref = 30)
    genes <- c("T1", "T2")
    mat <- matrix(seq_len(40) / 10, 2, 20)
    row_data <- list(reliability = c(0.5, 0.7), in_panel = c(FALSE, FALSE),
                     reliability_lower = c(0.4, 0.6), reliability_upper = c(0.6, 0.8),
                     reliability_knn_k15_uniform = c(0.5, 0.6))
    layers <- list(lower = mat - 1, upper = mat + 1)
    params <- paste0('{"method": "auto", "provenance": {"method": "auto", "auto": ',
                     '{"members": {"knn_k15_uniform": {"weight": 1.0, "inner_spcc": 0.7, ',
                     '"inner_seconds": 0.1}}}}}')
    dir <- tempfile("rds-")
    dir.create(dir)
    on.exit(unlink(dir, recursive = TRUE))
    write <- function(x, file) {
        src <- file.path(dir, paste0("in_", file))
        saveRDS(x, src)
        dst <- file.path(dir, file)
        SpatialImpute:::.write_imputed_rds(src, dst, mat, genes, numeric(), logical(), params,
                                           "imputed", row_data, layers)
        readRDS(dst)
    }
    back <- write(toy_sce_spatial(toy), "sce.rds")
    ae <- SingleCellExperiment::altExp(back, "imputed")
    expect_identical(SummarizedExperiment::assayNames(ae), c("logcounts", "lower", "upper"))
    expect_equal(unname(as.matrix(SummarizedExperiment::assay(ae, "upper"))), mat + 1)
    expect_identical(colnames(SummarizedExperiment::rowData(ae)), names(row_data))
    expect_equal(reliability(back, interval = TRUE)$lower, c(0.4, 0.6))
    expect_identical(imputeInfo(back)$method, "auto")
    expect_identical(ensembleSummary(back)$member, "knn_k15_uniform")
    if (requireNamespace("SeuratObject", quietly = TRUE)) {
        seu <- write(toy_seurat_spatial(toy), "seurat.rds")
        expect_true(all(c("imputed_lower", "imputed_upper") %in% SeuratObject::Assays(seu)))
        expect_equal(unname(as.matrix(imputedIntervals(seu)$lower)), mat - 1)
        expect_equal(reliability(seu, interval = TRUE)$upper, c(0.6, 0.8))
    }
    # Older callers (no row_data / layers) still work.
    src <- file.path(dir, "in_sce.rds")
    dst <- file.path(dir, "old.rds")
    SpatialImpute:::.write_imputed_rds(src, dst, mat, genes, c(0.5, 0.7), c(FALSE, TRUE),
                                       '{"method": "knn"}', "imputed")
    old <- SingleCellExperiment::altExp(readRDS(dst), "imputed")
    expect_identical(colnames(SummarizedExperiment::rowData(old)), c("reliability", "in_panel"))
    expect_identical(SummarizedExperiment::assayNames(old), "logcounts")
})
