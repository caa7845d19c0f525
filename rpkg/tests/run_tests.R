# Runs the testthat suite of the installed SpatialImpute package and prints a final line
# "N passed, N failed, N skipped" (counted per test_that() block); exits non-zero on any
# failure or error. Under CI=true a missing Python core fails the run instead of skipping.
#
# Usage: Rscript rpkg/tests/run_tests.R   (also run by R CMD check)
#   RETICULATE_PYTHON=/path/to/python selects the Python that has 'spatialimpute'.

args <- commandArgs(trailingOnly = FALSE)
file_arg <- sub("^--file=", "", args[grepl("^--file=", args)])
here <- if (length(file_arg)) dirname(normalizePath(file_arg[1])) else getwd()
test_dir <- file.path(here, "testthat")
if (!dir.exists(test_dir)) test_dir <- file.path(getwd(), "testthat")
if (!dir.exists(test_dir)) stop("run_tests.R: cannot find the testthat directory next to it")

# Lets real-data tests find <repo>/../shared/data (they skip when it is absent).
Sys.setenv(SPATIALIMPUTE_R_TESTS_DIR = dirname(test_dir))
suppressPackageStartupMessages(library(testthat))
options(testthat.progress.max_fails = Inf)  # count every failure, never stop early
results <- testthat::test_dir(test_dir, package = "SpatialImpute", load_package = "installed",
                              reporter = testthat::ProgressReporter$new(show_praise = FALSE),
                              stop_on_failure = FALSE, stop_on_warning = FALSE)
df <- as.data.frame(results)
failed <- df$failed > 0 | df$error
skipped <- !failed & df$skipped
passed <- !failed & !skipped
if (any(skipped)) {
    cat("\nSkipped:\n")
    for (i in which(skipped)) cat("  ", df$file[i], ": ", df$test[i], "\n", sep = "")
}
if (any(failed)) {
    cat("\nFailed:\n")
    for (i in which(failed)) cat("  ", df$file[i], ": ", df$test[i], "\n", sep = "")
}
cat(sprintf("%d passed, %d failed, %d skipped\n", sum(passed), sum(failed), sum(skipped)))
if (any(failed) || nrow(df) == 0L) quit(save = "no", status = 1L)
