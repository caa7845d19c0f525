#' SpatialImpute: impute unmeasured genes in imaging spatial transcriptomics
#'
#' The package brings the `spatialimpute` Python library to Bioconductor and Seurat users.
#' [imputeSpatial()] takes a `SpatialExperiment` (or a `SingleCellExperiment` with
#' coordinates, or a `Seurat` imaging object) and a single-cell reference and returns the
#' same object with the imputed genes, their reliability and (with the default method,
#' `"auto"`) prediction intervals added. Python is found through
#' `RETICULATE_PYTHON`, [useSpatialImputePython()] or the environment that
#' [installSpatialImputePython()] creates; `library(SpatialImpute)` itself never starts
#' Python.
#'
#' @keywords internal
#' @import methods
#' @import SingleCellExperiment
#' @importFrom SummarizedExperiment assay colData rowData
"_PACKAGE"
