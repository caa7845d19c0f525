test_that("library(SpatialImpute) does not start Python", {
    # This file runs first: nothing before it may have touched Python.
    expect_true(isNamespaceLoaded("SpatialImpute"))
    expect_false(reticulate::py_available(initialize = FALSE))
})

test_that("environment helpers validate their arguments without starting Python", {
    expect_error(useSpatialImputePython(), "exactly one of")
    expect_error(useSpatialImputePython(python = "a", virtualenv = "b"), "exactly one of")
    expect_error(useSpatialImputePython(python = tempfile("no-python-")), "does not exist")
    expect_error(useSpatialImputePython(virtualenv = tempfile("no-env-")), "was not found")
    empty <- tempfile("src-")
    dir.create(empty)
    on.exit(unlink(empty, recursive = TRUE))
    expect_error(installSpatialImputePython(envname = tempfile("env-"), source = empty),
                 "without pyproject.toml")
    expect_false(reticulate::py_available(initialize = FALSE))
})
