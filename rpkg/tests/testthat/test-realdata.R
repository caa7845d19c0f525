# Real data: the shared osmFISH pair (../shared/data relative to the repository, or
# SPATIALIMPUTE_DATA_DIR). Skipped when the data are absent (e.g. under R CMD check).

shared_data_dir <- function() {
    env <- Sys.getenv("SPATIALIMPUTE_DATA_DIR")
    if (nzchar(env)) return(env)
    tests <- Sys.getenv("SPATIALIMPUTE_R_TESTS_DIR")  # set by run_tests.R: <repo>/rpkg/tests
    if (!nzchar(tests)) return("")
    normalizePath(file.path(tests, "..", "..", "..", "shared", "data"), mustWork = FALSE)
}

read_pair <- function(dir) {
    ad <- reticulate::import("anndata", convert = FALSE)
    sp_ad <- ad$read_h5ad(file.path(dir, "spatial.h5ad"))
    ref_ad <- ad$read_h5ad(file.path(dir, "scrna.h5ad"))
    sp <- SpatialImpute:::.anndata_to_sce(sp_ad, "counts")
    xy <- SpatialImpute:::.py_matrix_to_r(reticulate::py_get_item(sp_ad$obsm, "spatial"))
    rownames(xy) <- colnames(sp)
    SingleCellExperiment::int_colData(sp)$spatialCoords <- xy
    list(spatial = sp, reference = SpatialImpute:::.anndata_to_sce(ref_ad, "counts"), xy = xy)
}

test_that("osmFISH: SCE with coordinates and Seurat give the imputed genes in place", {
    dir <- file.path(shared_data_dir(), "osmfish_somatosensory")
    skip_if_not(file.exists(file.path(dir, "spatial.h5ad")), "shared osmFISH data not found")
    skip_if_not_installed("SeuratObject")
    skip_if_no_core()
    pair <- read_pair(dir)
    sp <- pair$spatial
    genes <- c("Gad2", "Vip", "Tbr1", "Kcnip2", "Mfge8", "Bmp4")  # held-out panel genes
    expect_true(all(genes %in% rownames(sp)))
    before <- sp
    out <- imputeSpatial(sp, pair$reference, method = "knn", genes = genes)
    expect_identical(sp, before)
    ae <- SingleCellExperiment::altExp(out, "imputed")
    expect_identical(rownames(ae), genes)
    expect_identical(colnames(ae), colnames(sp))
    rel <- reliability(out)
    expect_true(all(rel >= 0 & rel <= 1))
    # Held-out genes: imputed vs measured (log-normalised) expression.
    counts <- as.matrix(SummarizedExperiment::assay(sp, "counts"))
    lib <- colSums(counts)
    measured <- log1p(t(t(counts) / lib * stats::median(lib)))
    imputed <- as.matrix(SummarizedExperiment::assay(ae, "logcounts"))
    r <- vapply(genes, function(g) stats::cor(imputed[g, ], measured[g, ]), numeric(1))
    expect_gt(mean(r), 0.2)
    expect_gt(r[["Gad2"]], 0.4)
    # Bad input leaves the object untouched.
    expect_error(imputeSpatial(sp, pair$reference, method = "knn", genes = "NotAGene"),
                 "NotAGene")
    expect_identical(sp, before)

    # The same data as a Seurat object with an FOV.
    cnt <- methods::as(methods::as(SummarizedExperiment::assay(sp, "counts"), "CsparseMatrix"),
                       "generalMatrix")
    seu <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = cnt))
    cents <- SeuratObject::CreateCentroids(data.frame(x = pair$xy[, 1], y = pair$xy[, 2],
                                                      cell = colnames(sp)))
    seu[["fov"]] <- SeuratObject::CreateFOV(coords = list(centroids = cents),
                                            type = "centroids", assay = "RNA", key = "fov_")
    seu_out <- imputeSpatial(seu, pair$reference, method = "knn", genes = genes)
    expect_s4_class(seu_out, "Seurat")
    expect_equal(reliability(seu_out), rel)
    expect_equal(unname(as.matrix(SeuratObject::GetAssayData(seu_out[["imputed"]], "data"))),
                 unname(imputed))
})
