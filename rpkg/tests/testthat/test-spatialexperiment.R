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
