test_that("Seurat with an FOV: new assay, reliability in feature meta data, tools", {
    skip_if_not_installed("SeuratObject")
    skip_if_no_core()
    toy <- make_toy_pair()
    seu <- toy_seurat_spatial(toy)
    before <- seu
    ref_seu <- toy_seurat_reference(toy)
    out <- imputeSpatial(seu, ref_seu, method = "knn", k = 15)
    expect_identical(seu, before)
    expect_s4_class(out, "Seurat")
    expect_setequal(SeuratObject::Assays(out), c("RNA", "imputed"))
    expect_identical(SeuratObject::DefaultAssay(out), "RNA")
    m <- SeuratObject::GetAssayData(out[["imputed"]], "data")
    expect_identical(colnames(m), colnames(seu))
    expect_identical(rownames(m), c("T1", "T2", "T3"))
    expect_gt(gene_cor(as.matrix(m), toy$truth, "T1"), 0.8)
    mf <- out[["imputed"]][[]]
    expect_true(all(mf$reliability >= 0 & mf$reliability <= 1))
    expect_identical(reliability(out), stats::setNames(mf$reliability, rownames(mf)))
    info <- out@tools$imputeSpatial$imputed
    expect_identical(info$method, "knn")
    expect_identical(info$coords, "image: fov")
    expect_identical(imputeInfo(out), info)
    # The same numbers as the SCE path with an SCE reference.
    sce_out <- imputeSpatial(toy_sce_spatial(toy), toy_sce_reference(toy), method = "knn",
                             k = 15)
    expect_equal(unname(as.matrix(m)), unname(as.matrix(SummarizedExperiment::assay(
        SingleCellExperiment::altExp(sce_out)))))
    # Mixed inputs and meta.data coordinates.
    mixed <- imputeSpatial(seu, toy_sce_reference(toy), method = "knn", k = 15,
                           coords = c("x", "y"), name = "imp2", labels_key = "cell_type")
    expect_true("imp2" %in% SeuratObject::Assays(mixed))
    expect_identical(imputeInfo(mixed, "imp2")$coords, "the Seurat meta.data: x, y")
})

test_that("Seurat bad input: no FOV, cells missing from the FOV, default assay name", {
    skip_if_not_installed("SeuratObject")
    toy <- make_toy_pair(n_cells = 40, n_ref = 60)
    seu <- toy_seurat_spatial(toy)
    ref <- toy_sce_reference(toy)
    nofov <- suppressWarnings(SeuratObject::CreateSeuratObject(
        counts = methods::as(toy$sp_counts, "CsparseMatrix")))
    before <- nofov
    expect_error(imputeSpatial(nofov, ref, method = "knn"), "no FOV")
    expect_identical(nofov, before)
    expect_error(imputeSpatial(seu, ref, method = "knn", name = "RNA"), "default assay")
    expect_error(imputeSpatial(seu, ref, method = "knn", coords = "fov:other"), "no such image")
    partial <- seu
    cents <- SeuratObject::CreateCentroids(data.frame(x = toy$xy[-1, "x"], y = toy$xy[-1, "y"],
                                                      cell = colnames(seu)[-1]))
    partial[["fov"]] <- SeuratObject::CreateFOV(coords = list(centroids = cents),
                                                type = "centroids", assay = "RNA", key = "fov_")
    before <- partial
    expect_error(imputeSpatial(partial, ref, method = "knn"), "have no centroid")
    expect_identical(partial, before)
    expect_error(imputeSpatial(seu, ref, assay.type = "nope", method = "knn"),
                 "assay.type")
})

test_that("Seurat with several FOVs: each image is a section, cells keep their order", {
    skip_if_not_installed("SeuratObject")
    skip_if_no_core()
    toy <- make_toy_pair()
    counts <- methods::as(methods::as(toy$sp_counts, "CsparseMatrix"), "generalMatrix")
    seu <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts, assay = "RNA"))
    half <- seq_len(ncol(counts)) %% 2 == 0
    for (img in c("fov_a", "fov_b")) {
        keep <- if (img == "fov_a") half else !half
        cents <- SeuratObject::CreateCentroids(data.frame(
            x = toy$xy[keep, "x"], y = toy$xy[keep, "y"], cell = colnames(counts)[keep]))
        seu[[img]] <- SeuratObject::CreateFOV(coords = list(centroids = cents), type = "centroids",
                                              assay = "RNA", key = paste0(sub("_", "", img), "_"))
    }
    out <- imputeSpatial(seu, toy_seurat_reference(toy), method = "knn", k = 15)
    info <- imputeInfo(out)
    expect_identical(info$coords, "images: fov_a, fov_b")
    expect_identical(info$provenance$data$sample_key, "spatialimpute_section")
    m <- SeuratObject::GetAssayData(out[["imputed"]], "data")
    expect_identical(colnames(m), colnames(seu))
    expect_gt(gene_cor(as.matrix(m), toy$truth, "T1"), 0.8)
})
