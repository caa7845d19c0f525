# Bad input: clear R errors (Python's message for what the core checks), input untouched.

expect_untouched_error <- function(expr_fun, obj, pattern) {
    before <- obj
    expect_error(expr_fun(obj), pattern)
    expect_identical(obj, before)
}

test_that("R-side checks name the argument and leave the input untouched", {
    toy <- make_toy_pair(n_cells = 40, n_ref = 60)
    spe <- toy_sce_spatial(toy)
    ref <- toy_sce_reference(toy)
    run <- function(x, ...) imputeSpatial(x, ref, method = "knn", ...)
    expect_untouched_error(function(x) run(x, assay.type = "nope"), spe, "no such assay")
    chr <- spe
    SummarizedExperiment::assay(chr, "counts") <- matrix(
        as.character(toy$sp_counts), nrow(spe), dimnames = dimnames(toy$sp_counts))
    expect_untouched_error(function(x) run(x), chr, "must be a numeric matrix")
    lgl <- spe
    SummarizedExperiment::assay(lgl, "counts") <- toy$sp_counts > 3
    expect_untouched_error(function(x) run(x), lgl, "must be a numeric matrix")
    expect_untouched_error(function(x) run(x, coords = c("x", "nope")), spe, "not found")
    expect_untouched_error(function(x) run(x, coords = "cell_type"), spe, "at least two")
    bad_xy <- toy$xy[-1, ]
    expect_untouched_error(function(x) run(x, coords = bad_xy), spe, "one row per cell")
    na_xy <- spe
    xy <- toy$xy
    xy[2, 1] <- NA
    SingleCellExperiment::int_colData(na_xy)$spatialCoords <- xy
    expect_untouched_error(function(x) run(x), na_xy, "NA/NaN/Inf")
    dup <- spe
    rownames(dup)[2] <- rownames(dup)[1]
    expect_untouched_error(function(x) run(x), dup, "duplicated gene names")
    expect_untouched_error(function(x) run(x, name = ""), spe, "'name'")
    expect_untouched_error(function(x) run(x, seed = -1), spe, "'seed'")
    expect_untouched_error(function(x) run(x, genes = character()), spe, "'genes'")
    expect_untouched_error(function(x) run(x, num.threads = 0), spe, "'num.threads'")
    expect_untouched_error(function(x) run(x, labels_key = "nope"), spe, "not in colData")
    expect_error(imputeSpatial(matrix(1, 2, 2), ref), "must be a SpatialExperiment")
    expect_error(imputeSpatial(spe, list()), "'sce' must be")
})

test_that("errors from the Python core arrive as R errors with the Python message", {
    skip_if_no_core()
    toy <- make_toy_pair(n_cells = 40, n_ref = 60)
    spe <- toy_sce_spatial(toy)
    before <- spe
    ref <- toy_sce_reference(toy)
    # Unknown target gene (no shared genes is refused in R, see below), unknown method.
    err <- expect_error(imputeSpatial(spe, ref, method = "knn", genes = "GENE_X"), "GENE_X")
    expect_match(conditionMessage(err), "SpatialImputeInputError")
    expect_false(grepl("Traceback", conditionMessage(err)))
    expect_error(imputeSpatial(spe, ref, method = "no_such_method"), "no_such_method")
    # A bad method parameter is checked by the core before any training.
    expect_error(imputeSpatial(spe, ref, method = "knn", k = 0), "`k`")
    # Negative counts are rejected by the core.
    neg <- spe
    SummarizedExperiment::assay(neg, "counts")[1, 1] <- -5
    expect_error(imputeSpatial(neg, ref, method = "knn"), "SpatialImpute \\(Python core\\)")
    expect_identical(spe, before)
    # Unknown method parameter.
    expect_error(imputeSpatial(spe, ref, method = "knn", not_a_param = 1),
                 "SpatialImpute \\(Python core\\)")
})

test_that("method parameters must be named; whole doubles become integers", {
    expect_error(SpatialImpute:::.as_python_params(list(1)), "must all be named")
    p <- SpatialImpute:::.as_python_params(list(k = 10, lr = 0.5, name = "a"))
    expect_identical(p, list(k = 10L, lr = 0.5, name = "a"))
})

test_that("issue 15: NA counts, no shared genes and other bad objects fail in R, naming the argument", {
    toy <- make_toy_pair(n_cells = 40, n_ref = 60)
    spe <- toy_sce_spatial(toy)
    ref <- toy_sce_reference(toy)
    run <- function(x, ...) imputeSpatial(x, ref, method = "knn", ...)
    expect_untouched_error(function(x) run(x, assay.type = "nope"), spe, "'assay.type'")
    na <- spe
    SummarizedExperiment::assay(na, "counts")[1, 2] <- NA
    expect_untouched_error(function(x) run(x), na, "'assay.type'.*NA/NaN/Inf")
    ref_na <- ref
    SummarizedExperiment::assay(ref_na, "counts")[3, 1] <- NaN
    expect_untouched_error(function(r) imputeSpatial(spe, r, method = "knn"), ref_na,
                           "'ref.assay.type'.*NA/NaN/Inf")
    other <- ref
    rownames(other) <- paste0("X_", rownames(ref))
    expect_untouched_error(function(r) imputeSpatial(spe, r, method = "knn"), other,
                           "'sce'.*no gene names")
    lower <- ref
    rownames(lower) <- tolower(rownames(ref))
    expect_untouched_error(function(r) imputeSpatial(spe, r, method = "knn"), lower,
                           "case_insensitive_genes")
    dup <- ref
    rownames(dup)[2] <- rownames(dup)[1]
    expect_untouched_error(function(r) imputeSpatial(spe, r, method = "knn"), dup,
                           "'sce'.*duplicated gene names")
    nocoords <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = SummarizedExperiment::assay(spe, "counts")))
    expect_untouched_error(function(x) run(x), nocoords, "'spe': no spatial coordinates")
})

test_that("issue 15: a Seurat object without an FOV fails naming 'spe'", {
    skip_if_not_installed("SeuratObject")
    toy <- make_toy_pair(n_cells = 40, n_ref = 60)
    seu <- suppressWarnings(SeuratObject::CreateSeuratObject(
        counts = methods::as(toy$sp_counts, "dgCMatrix")))
    expect_untouched_error(function(x) imputeSpatial(x, toy_sce_reference(toy), method = "knn"),
                           seu, "'spe': the Seurat object has no FOV")
})
