# Finding, configuring and creating the Python environment that runs the core.
#
# Resolution order the first time the core is needed (and never at library()):
#   1. a Python reticulate has already started (nothing can change it any more);
#   2. the RETICULATE_PYTHON environment variable (reticulate honours it itself);
#   3. options(SpatialImpute.python = "/path/to/python") or useSpatialImputePython();
#   4. the virtualenv made by installSpatialImputePython() (default name "r-spatialimpute").

.si_env <- new.env(parent = emptyenv())

#' Default name of the virtualenv created by installSpatialImputePython()
#' @noRd
.default_envname <- function() {
    getOption("SpatialImpute.envname", "r-spatialimpute")
}

#' Point SpatialImpute at a Python environment
#'
#' Chooses the Python interpreter (or virtualenv) that holds the `spatialimpute` module.
#' This must happen before Python starts in the R session: once `reticulate` has started
#' an interpreter it cannot be swapped, and you get an error saying which one is running.
#' You rarely need this function: setting the environment variable `RETICULATE_PYTHON`
#' before starting R, or having run [installSpatialImputePython()], is enough.
#'
#' @param python Path to a Python executable, or `NULL`.
#' @param virtualenv Name or path of a virtualenv, or `NULL`. Give exactly one of `python`
#'   and `virtualenv`.
#' @param check If `TRUE` (default), start Python now and check that `spatialimpute`
#'   imports; if `FALSE`, only record the choice (Python then starts at the first
#'   [imputeSpatial()] call).
#'
#' @return Invisibly, the path of the Python executable that will be used.
#' @seealso [installSpatialImputePython()], [spatialImputeAvailable()]
#' @examples
#' \dontrun{
#' useSpatialImputePython(python = "~/.venvs/spatialimpute/bin/python")
#' }
#' @export
useSpatialImputePython <- function(python = NULL, virtualenv = NULL, check = TRUE) {
    if (is.null(python) == is.null(virtualenv)) {
        stop("useSpatialImputePython(): give exactly one of 'python' (path to an ",
             "executable) and 'virtualenv' (name or path); found ",
             if (is.null(python)) "neither" else "both", ".", call. = FALSE)
    }
    if (!is.null(virtualenv)) {
        python <- .virtualenv_python(virtualenv)
        if (is.null(python)) {
            stop("useSpatialImputePython(): virtualenv '", virtualenv, "' was not found. ",
                 "Create it with installSpatialImputePython(envname = \"", virtualenv,
                 "\") or give the path of an existing one.", call. = FALSE)
        }
    }
    python <- path.expand(python)
    if (!file.exists(python)) {
        stop("useSpatialImputePython(): 'python' = '", python, "' does not exist. ",
             "Give the path of a Python executable (e.g. <venv>/bin/python).",
             call. = FALSE)
    }
    if (reticulate::py_available(initialize = FALSE)) {
        running <- reticulate::py_config()$python
        if (!identical(normalizePath(running, mustWork = FALSE),
                       normalizePath(python, mustWork = FALSE))) {
            stop("useSpatialImputePython(): Python is already running in this R session ",
                 "('", running, "') and cannot be changed. Restart R and call ",
                 "useSpatialImputePython() before anything else uses Python.",
                 call. = FALSE)
        }
    }
    options(SpatialImpute.python = python)
    reticulate::use_python(python, required = TRUE)
    if (check) .si_module()
    invisible(python)
}

#' Python executable inside a virtualenv given by name or path, or NULL.
#' @noRd
.virtualenv_python <- function(virtualenv) {
    exists <- tryCatch(reticulate::virtualenv_exists(virtualenv), error = function(e) FALSE)
    if (!isTRUE(exists)) return(NULL)
    tryCatch(reticulate::virtualenv_python(virtualenv), error = function(e) NULL)
}

#' Make reticulate use the configured Python, if Python has not started yet.
#' @noRd
.configure_python <- function() {
    if (reticulate::py_available(initialize = FALSE)) return(invisible(NULL))
    if (nzchar(Sys.getenv("RETICULATE_PYTHON"))) return(invisible(NULL))
    python <- getOption("SpatialImpute.python")
    if (is.null(python)) python <- .virtualenv_python(.default_envname())
    if (!is.null(python)) reticulate::use_python(python, required = TRUE)
    invisible(NULL)
}

#' Is the SpatialImpute Python core available?
#'
#' Checks, without raising an error, whether Python can be started and the `spatialimpute`
#' module imported. Note that this starts Python (with the environment chosen as described
#' in [useSpatialImputePython()]) if it is not running yet.
#'
#' @return `TRUE` or `FALSE`.
#' @examples
#' spatialImputeAvailable()
#' @export
spatialImputeAvailable <- function() {
    ok <- tryCatch({
        .configure_python()
        reticulate::py_module_available("spatialimpute")
    }, error = function(e) FALSE)
    isTRUE(ok)
}

#' The spatialimpute Python module (importing it, with a clear error if it cannot).
#' @noRd
.si_module <- function() {
    if (!is.null(.si_env$module)) return(.si_env$module)
    .configure_python()
    available <- tryCatch(reticulate::py_module_available("spatialimpute"),
                          error = function(e) e)
    if (inherits(available, "error") || !isTRUE(available)) {
        where <- tryCatch(reticulate::py_config()$python, error = function(e) NA_character_)
        why <- if (inherits(available, "error")) conditionMessage(available) else
            "the module 'spatialimpute' is not installed there"
        stop("SpatialImpute needs the Python package 'spatialimpute', which could not be ",
             "loaded (Python: ", if (is.na(where)) "none found" else where, "; ", why, "). ",
             "Fix: run installSpatialImputePython(source = \"<path to the spatialimpute ",
             "source>\") once, or set RETICULATE_PYTHON to a Python that has it and ",
             "restart R, or call useSpatialImputePython() before any other Python use.",
             call. = FALSE)
    }
    module <- if (is.null(spatialimpute)) {
        reticulate::import("spatialimpute", convert = FALSE)
    } else {
        spatialimpute
    }
    .si_env$module <- module
    module
}

#' Create a Python virtualenv with the SpatialImpute core
#'
#' Creates (or updates) a virtualenv and installs, in this order, the pinned `torch`
#' (CPU wheels by default), `numpy<2` and `zarr<3` (needed by `reticulate` before 1.36), and
#' the `spatialimpute` package from `source`. Afterwards, in a fresh R session,
#' [imputeSpatial()] finds the environment by itself.
#'
#' @param envname Name or path of the virtualenv. The default, `"r-spatialimpute"`, lives
#'   in reticulate's virtualenv root (`~/.virtualenvs`) and is found automatically.
#' @param source Where to install `spatialimpute` from: a local directory (the source
#'   tree holding `pyproject.toml`), a wheel, or any `pip install` requirement. The default
#'   `NULL` uses the directory in the option `SpatialImpute.source` or the environment
#'   variable `SPATIALIMPUTE_SOURCE`, and otherwise the requirement `"spatialimpute"`.
#' @param python Python used to create the virtualenv (`NULL`: reticulate's choice).
#' @param torch Requirement for torch, installed first. Defaults to the tested pin.
#' @param torch_index_url Package index for torch; the default gives CPU-only wheels. Use
#'   e.g. `"https://download.pytorch.org/whl/cu121"` for CUDA, or `NULL` for PyPI's default.
#' @param extras Extra requirements installed with the package.
#'
#' @return Invisibly, the path of the environment's Python executable.
#' @seealso [useSpatialImputePython()]
#' @examples
#' \dontrun{
#' installSpatialImputePython(source = "~/src/spatialimpute")
#' }
#' @export
installSpatialImputePython <- function(envname = .default_envname(), source = NULL,
                                       python = NULL, torch = "torch==2.13.0",
                                       torch_index_url = "https://download.pytorch.org/whl/cpu",
                                       extras = character()) {
    if (is.null(source)) {
        source <- getOption("SpatialImpute.source", Sys.getenv("SPATIALIMPUTE_SOURCE"))
        if (!nzchar(source)) source <- "spatialimpute"
    }
    if (dir.exists(source)) {
        if (!file.exists(file.path(source, "pyproject.toml"))) {
            stop("installSpatialImputePython(): 'source' = '", source, "' is a directory ",
                 "without pyproject.toml. Give the root of the spatialimpute source tree.",
                 call. = FALSE)
        }
        source <- normalizePath(source)
    }
    message("SpatialImpute: creating virtualenv '", envname, "'")
    if (!isTRUE(reticulate::virtualenv_exists(envname))) {
        reticulate::virtualenv_create(envname, python = python)
    }
    pip <- function(what, ...) {
        message("SpatialImpute: pip install ", paste(what, collapse = " "))
        reticulate::virtualenv_install(envname, what, ignore_installed = FALSE, ...)
    }
    if (!is.null(torch_index_url)) {
        pip(torch, pip_options = c("--index-url", torch_index_url))
    } else {
        pip(torch)
    }
    pip(c("numpy<2", "zarr<3"))
    pip(c(source, extras))
    py <- reticulate::virtualenv_python(envname)
    how <- if (identical(envname, .default_envname())) {
        "It is used automatically in new R sessions (or set RETICULATE_PYTHON="
    } else {
        paste0("Use it with useSpatialImputePython(virtualenv = \"", envname, "\") at the ",
               "start of an R session (or set RETICULATE_PYTHON=")
    }
    message("SpatialImpute: done. Python for SpatialImpute: ", py, "\n", how, py, ").")
    invisible(py)
}
