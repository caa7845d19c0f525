test_that("SpatialExperiment in, SpatialExperiment out (when installed)", {
    skip_if_not_installed("SpatialExperiment")
    skip_if_no_core()
    toy <- make_toy_pair()
    spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = toy$sp_counts), spatialCoords = toy$xy)
    before <- spe
    out <- imputeSpatial(spe, toy_sce_reference(toy), method = "knn", k = 15)
    expect_identical(spe, before)
    expect_s4_class(out, "SpatialExperiment")
    expect_identical(SpatialExperiment::spatialCoords(out), SpatialExperiment::spatialCoords(spe))
    ae <- SingleCellExperiment::altExp(out, "imputed")
    expect_gt(gene_cor(as.matrix(SummarizedExperiment::assay(ae)), toy$truth, "T1"), 0.8)
})

test_that("simulateSpatialPair() makes a usable pair with coordinates", {
    skip_if_no_core()
    sim <- simulateSpatialPair(n_cells = 60, n_reference = 80, n_genes = 30, n_panel = 10,
                               seed = 2)
    expect_s4_class(sim$spatial, "SingleCellExperiment")
    expect_equal(dim(sim$spatial), c(10L, 60L))
    expect_equal(dim(sim$reference), c(30L, 80L))
    expect_equal(dim(sim$truth), c(30L, 60L))
    expect_equal(nrow(SingleCellExperiment::int_colData(sim$spatial)$spatialCoords), 60L)
    expect_true(all(c("cell_type", "domain") %in% colnames(SummarizedExperiment::colData(sim$spatial))))
    out <- imputeSpatial(sim$spatial, sim$reference, method = "knn", k = 10)
    expect_equal(nrow(SingleCellExperiment::altExp(out)), 20L)
})

# Two sections whose coordinates overlap (both in the unit square), as a real
# SpatialExperiment with a sample_id per cell.
two_section_spe <- function() {
    a <- make_toy_pair(n_cells = 80, seed = 1)
    b <- make_toy_pair(n_cells = 80, seed = 2)
    colnames(b$sp_counts) <- rownames(b$xy) <- sub("cell", "b_cell", colnames(b$sp_counts))
    colnames(b$truth) <- colnames(b$sp_counts)
    spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = cbind(a$sp_counts, b$sp_counts)),
        colData = S4Vectors::DataFrame(sample_id = rep(c("slice_a", "slice_b"), each = 80)),
        spatialCoords = rbind(a$xy, b$xy))
    list(spe = spe, reference = toy_sce_reference(a), truth = cbind(a$truth, b$truth))
}

test_that("multi-sample SpatialExperiment: class, spatialCoords, altExp, rowData, sample_id", {
    skip_if_not_installed("SpatialExperiment")
    skip_if_no_core()
    two <- two_section_spe()
    set.seed(3)
    spe <- two$spe[, sample(ncol(two$spe))]  # sections interleaved: order must be kept
    before <- spe
    out <- imputeSpatial(spe, two$reference, method = "knn", k = 15)
    expect_identical(spe, before)
    expect_s4_class(out, "SpatialExperiment")
    expect_identical(SpatialExperiment::spatialCoords(out), SpatialExperiment::spatialCoords(spe))
    expect_identical(out$sample_id, spe$sample_id)
    ae <- SingleCellExperiment::altExp(out, "imputed")
    expect_identical(colnames(ae), colnames(spe))
    expect_identical(rownames(ae), c("T1", "T2", "T3"))
    rel <- SummarizedExperiment::rowData(ae)$reliability
    expect_true(all(rel >= 0 & rel <= 1))
    expect_identical(reliability(out), stats::setNames(rel, rownames(ae)))
    # the sections reached the core as separate samples
    expect_identical(imputeInfo(out)$provenance$data$sample_key, "spatialimpute_section")
    expect_gt(gene_cor(as.matrix(SummarizedExperiment::assay(ae)), two$truth, "T1"), 0.8)
})

test_that("a one-section SpatialExperiment is one sample", {
    skip_if_not_installed("SpatialExperiment")
    skip_if_no_core()
    toy <- make_toy_pair()
    spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = toy$sp_counts), spatialCoords = toy$xy, sample_id = "only")
    out <- imputeSpatial(spe, toy_sce_reference(toy), method = "knn", k = 15)
    expect_null(imputeInfo(out)$provenance$data$sample_key)
})

test_that("cells with NA sample_id are refused", {
    toy <- make_toy_pair()
    sce <- toy_sce_spatial(toy)  # a SingleCellExperiment may carry sample_id too
    sce$sample_id <- rep(c("a", "b"), length.out = ncol(sce))
    sce$sample_id[2] <- NA
    expect_error(imputeSpatial(sce, toy_sce_reference(toy), method = "knn"), "sample_id")
})
