test_that("SCE with spatialCoords: altExp with logcounts, reliability, params; input kept", {
    skip_if_no_core()
    toy <- make_toy_pair()
    spe <- toy_sce_spatial(toy)
    ref <- toy_sce_reference(toy)
    before <- spe
    out <- imputeSpatial(spe, ref, method = "knn", k = 15)
    expect_identical(spe, before)
    expect_s4_class(out, "SingleCellExperiment")
    expect_identical(class(out), class(spe))
    expect_identical(SingleCellExperiment::altExpNames(out), "imputed")
    ae <- SingleCellExperiment::altExp(out, "imputed")
    expect_identical(SummarizedExperiment::assayNames(ae), "logcounts")
    expect_identical(colnames(ae), colnames(spe))
    expect_identical(rownames(ae), c("T1", "T2", "T3"))
    m <- SummarizedExperiment::assay(ae, "logcounts")
    expect_true(is.double(m))
    expect_true(all(is.finite(as.matrix(m))))
    rel <- reliability(out)
    expect_named(rel, c("T1", "T2", "T3"))
    expect_true(all(rel >= 0 & rel <= 1))
    info <- imputeInfo(out)
    expect_identical(info$method, "knn")
    expect_identical(info$coords, "spatialCoords")
    expect_identical(info$method_params$k, 15L)
    expect_identical(info$provenance$method, "knn")
    # The planted answer: T1 marks the left (type A) half, T2 the right half.
    expect_gt(gene_cor(as.matrix(m), toy$truth, "T1"), 0.8)
    expect_gt(gene_cor(as.matrix(m), toy$truth, "T2"), 0.8)
    left <- toy$type == "A"
    expect_gt(mean(m["T1", left]) - mean(m["T1", !left]), 1)
    expect_lt(mean(m["T2", left]) - mean(m["T2", !left]), -1)
    # Nothing but the altExp changed.
    SingleCellExperiment::altExps(out) <- list()
    expect_identical(SummarizedExperiment::assay(out, "counts"),
                     SummarizedExperiment::assay(spe, "counts"))
    expect_identical(SummarizedExperiment::colData(out), SummarizedExperiment::colData(spe))
    expect_identical(SingleCellExperiment::int_colData(out)$spatialCoords, toy$xy)
})

test_that("coordinates from colData columns or a reducedDim give the same result", {
    skip_if_no_core()
    toy <- make_toy_pair()
    ref <- toy_sce_reference(toy)
    ref_out <- imputeSpatial(toy_sce_spatial(toy), ref, method = "knn", k = 15)
    expected <- SummarizedExperiment::assay(SingleCellExperiment::altExp(ref_out), "logcounts")
    plain <- toy_sce_coldata(toy)
    expect_error(imputeSpatial(plain, ref, method = "knn"), "no spatial coordinates")
    out <- imputeSpatial(plain, ref, method = "knn", k = 15, coords = c("x", "y"))
    got <- SummarizedExperiment::assay(SingleCellExperiment::altExp(out), "logcounts")
    expect_equal(got, expected)
    expect_identical(imputeInfo(out)$coords, "colData(spe): x, y")
    rd <- plain
    SingleCellExperiment::reducedDim(rd, "spatial") <- toy$xy
    out_rd <- imputeSpatial(rd, ref, method = "knn", k = 15, coords = "reducedDim:spatial")
    expect_equal(SummarizedExperiment::assay(SingleCellExperiment::altExp(out_rd), "logcounts"),
                 expected)
    expect_error(imputeSpatial(rd, ref, method = "knn"), "reducedDim:spatial")
})

test_that("sparse and dense counts give the same result; names and seed are honoured", {
    skip_if_no_core()
    dense <- make_toy_pair(sparse = FALSE)
    sparse <- make_toy_pair(sparse = TRUE)
    a <- imputeSpatial(toy_sce_spatial(dense), toy_sce_reference(dense), method = "knn",
                       k = 15, seed = 3)
    b <- imputeSpatial(toy_sce_spatial(sparse), toy_sce_reference(sparse), method = "knn",
                       k = 15, seed = 3, name = "knn_result", num.threads = 1)
    expect_identical(SingleCellExperiment::altExpNames(b), "knn_result")
    expect_equal(SummarizedExperiment::assay(SingleCellExperiment::altExp(a), "logcounts"),
                 SummarizedExperiment::assay(SingleCellExperiment::altExp(b, "knn_result"),
                                             "logcounts"))
    expect_equal(reliability(a), reliability(b, "knn_result"))
    expect_identical(imputeInfo(b, "knn_result")$num.threads, 1)
})

test_that("cells without names are kept in order", {
    skip_if_no_core()
    toy <- make_toy_pair()
    spe <- toy_sce_spatial(toy)
    colnames(spe) <- NULL
    out <- imputeSpatial(spe, toy_sce_reference(toy), method = "knn", k = 15)
    ae <- SingleCellExperiment::altExp(out)
    expect_null(colnames(ae))
    expect_equal(ncol(ae), ncol(spe))
    m <- as.matrix(SummarizedExperiment::assay(ae))
    expect_gt(stats::cor(m["T1", ], toy$truth["T1", ]), 0.8)
})

test_that("genes = selects and orders the imputed genes, panel genes included", {
    skip_if_no_core()
    toy <- make_toy_pair()
    out <- imputeSpatial(toy_sce_spatial(toy), toy_sce_reference(toy), method = "knn",
                         k = 15, genes = c("T2", "P03"))
    ae <- SingleCellExperiment::altExp(out)
    expect_identical(rownames(ae), c("T2", "P03"))
    expect_identical(SummarizedExperiment::rowData(ae)$in_panel, c(FALSE, TRUE))
    # P03 was held out of the input: its prediction still follows type A.
    m <- SummarizedExperiment::assay(ae)
    left <- toy$type == "A"
    expect_gt(mean(m["P03", left]) - mean(m["P03", !left]), 1)
    expect_identical(imputeInfo(out)$genes, c("T2", "P03"))
})

test_that("verbose = TRUE reports the steps", {
    skip_if_no_core()
    toy <- make_toy_pair(n_cells = 40, n_ref = 60)
    expect_message(imputeSpatial(toy_sce_spatial(toy), toy_sce_reference(toy),
                                 method = "knn", k = 10, verbose = TRUE),
                   "running method 'knn'")
})
