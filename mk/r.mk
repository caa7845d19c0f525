# R side of SpatialImpute: the R stack (apt), the rpy2 bridge (venv), the R package rpkg/.
# Included by the top-level Makefile (which defines `install`, the Python venv target).
# Every target is idempotent: it installs only what is missing.

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
R_PYTHON := $(abspath $(PYTHON))
R_BUILD_DIR ?= build/r
R_STAMP := $(R_BUILD_DIR)/.rpkg-installed
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 (R 4.2.2, Bioconductor 3.16): see ../shared/R_BRIDGE.md for why these.
R_APT_PACKAGES := r-base-core r-base-dev r-bioc-singlecellexperiment \
	r-bioc-summarizedexperiment r-cran-seurat r-cran-seuratobject r-cran-reticulate \
	r-cran-testthat r-cran-knitr r-cran-rmarkdown r-bioc-biocstyle r-cran-ggplot2 \
	r-cran-jsonlite pandoc
R_PY_PACKAGES := rpy2==3.5.17 anndata2ri==2.0.1

# SpatialExperiment (Bioconductor 3.16) is not in Debian: installed from the vendored source
# tarball when it is there (a user's machine gets it from Bioconductor), skipped otherwise.
SPE_TARBALL ?= ../shared/vendor/SpatialExperiment_1.8.0.tar.gz
SPE_APT_PACKAGES := r-bioc-biocfilecache r-cran-rjson r-cran-magick r-bioc-dropletutils

.PHONY: r-deps r-apt r-py r-spe r-install r-test r-check r-vignette

r-deps: r-apt r-py r-spe

# $(call apt_install,NAME,PACKAGES): apt-get install those of PACKAGES not installed yet
# (one shell command; NAME prefixes its messages).
apt_install = missing=""; for p in $(2); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "$(1): apt-get install$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "$(1): Debian packages already installed"; fi

r-apt:
	@$(call apt_install,r-deps,$(R_APT_PACKAGES))

r-spe: r-apt
	@if [ ! -f $(SPE_TARBALL) ]; then \
		echo "r-spe: $(SPE_TARBALL) not found; SpatialExperiment tests will skip"; \
	elif Rscript -e 'quit(status = !requireNamespace("SpatialExperiment", quietly = TRUE))' 2>/dev/null; then \
		echo "r-spe: SpatialExperiment already installed"; \
	else \
		{ $(call apt_install,r-spe,$(SPE_APT_PACKAGES)); } && \
		$(SUDO) R CMD INSTALL --no-build-vignettes $(SPE_TARBALL); \
	fi

# rpy2 is built against the R headers (r-base-dev), hence after r-apt.
r-py: r-apt install
	@if $(PYTHON) -c "import importlib.metadata as m, sys; sys.exit(not (m.version('rpy2') == '3.5.17' and m.version('anndata2ri') == '2.0.1'))" 2>/dev/null; then \
		echo "r-deps: rpy2 3.5.17 and anndata2ri 2.0.1 already in $(VENV)"; \
	else $(PYTHON) -m pip install -q $(R_PY_PACKAGES) "numpy<2"; fi

# R CMD INSTALL into the default library, again only when rpkg/ changed since the last one.
r-install: r-apt
	@if [ -f $(R_STAMP) ] && [ -z "$$(find rpkg -type f -newer $(R_STAMP) | head -1)" ] && \
		Rscript -e 'quit(status = !nzchar(system.file(package = "SpatialImpute")))'; then \
		echo "r-install: SpatialImpute R package up to date"; \
	else \
		RETICULATE_PYTHON=$(R_PYTHON) R CMD INSTALL --no-multiarch rpkg && mkdir -p $(R_BUILD_DIR) && touch $(R_STAMP); \
	fi

# testthat suite of the installed package; prints "N passed, N failed, N skipped".
# CI=true turns a missing Python core into a failure.
r-test: r-deps r-install install
	RETICULATE_PYTHON=$(R_PYTHON) Rscript rpkg/tests/run_tests.R

# Full R CMD check (about 6 minutes; not part of make test).
r-check: r-install install
	rm -rf $(R_BUILD_DIR)/check && mkdir -p $(R_BUILD_DIR)/check
	cd $(R_BUILD_DIR)/check && RETICULATE_PYTHON=$(R_PYTHON) R CMD build $(CURDIR)/rpkg
	cd $(R_BUILD_DIR)/check && RETICULATE_PYTHON=$(R_PYTHON) _R_CHECK_FORCE_SUGGESTS_=false \
		R CMD check --no-manual SpatialImpute_*.tar.gz

# The vignette as HTML in $(R_BUILD_DIR)/vignette/SpatialImpute.html.
r-vignette: r-install install
	mkdir -p $(R_BUILD_DIR)/vignette
	RETICULATE_PYTHON=$(R_PYTHON) SPATIALIMPUTE_DATA_DIR=$(abspath ../shared/data) Rscript -e 'rmarkdown::render("rpkg/vignettes/SpatialImpute.Rmd", output_dir = "$(R_BUILD_DIR)/vignette", intermediates_dir = tempdir(), knit_root_dir = tempdir())'
