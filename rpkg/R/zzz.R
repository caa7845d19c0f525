# The Python module is bound lazily: library(SpatialImpute) never starts Python.
spatialimpute <- NULL

.onLoad <- function(libname, pkgname) {
    spatialimpute <<- reticulate::import("spatialimpute", delay_load = TRUE,
                                         convert = FALSE)
    invisible(NULL)
}
