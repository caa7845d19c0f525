"""Command line: ``spatialimpute impute|benchmark|simulate|demo|info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ._settings import settings
from ._validation import SpatialImputeInputError, check_int

_METHOD_HELP = "auto (default: the methods chosen and weighted on the panel genes), stimpute, stgnet, knn or mapping"


def _read(path: str, argument: str):
    """Read an .h5ad (or, with the R extra, an .rds) file; returns (AnnData, rds_info or None)."""
    p = Path(path)
    if not p.is_file():
        raise SpatialImputeInputError(argument, "an existing file", repr(path) + (" (a directory)" if p.is_dir() else ""),
                                      "check the path")
    if p.suffix.lower() == ".rds":
        from . import rbridge

        return rbridge.read_rds(p)
    if p.suffix.lower() != ".h5ad":
        raise SpatialImputeInputError(argument, "an .h5ad or .rds file", repr(path), "convert the data to AnnData (.h5ad)")
    import anndata

    try:
        return anndata.read_h5ad(p), None
    except Exception as err:  # h5py/anndata raise many types on damaged or foreign files
        size = p.stat().st_size
        raise SpatialImputeInputError(
            argument, "an AnnData .h5ad file", f"{path!r} ({size} bytes) unreadable: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"[:300],
            "check that the file is complete (copy or write it again) and was written by anndata",
        ) from err


def _read_folder(path: str, platform: str | None):
    """A SpatialData .zarr store or a Xenium / MERSCOPE / CosMx folder; returns (SpatialData, None)."""
    from .io import read_spatial

    try:
        return read_spatial(path, platform).data, None
    except ImportError as err:
        raise SpatialImputeInputError("--spatial", "the extra [spatialdata] to read a folder", str(err),
                                      "pip install 'spatialimpute[spatialdata]'") from err


def _check_out(out: Path, argument: str = "--out") -> None:
    """Refuse an output path that cannot be written, before any work."""
    if out.is_dir():
        raise SpatialImputeInputError(argument, "a file path", f"{str(out)!r} is a directory", "name a file inside it")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SpatialImputeInputError(argument, "a path whose folders are directories", f"{str(parent)!r} is a file",
                                      "choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpatialImputeInputError(argument, "a writable folder", f"no write permission in {str(parent)!r}",
                                      "choose another output path")


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpatialImputeInputError("--param", "KEY=VALUE", repr(item), "e.g. --param k=30")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _genes(args) -> list[str] | None:
    if args.genes_file:
        try:
            lines = Path(args.genes_file).read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as err:
            raise SpatialImputeInputError("--genes-file", "a readable text file with one gene per line",
                                          f"{args.genes_file!r}: {type(err).__name__}", "check the path") from err
        return [g for g in lines if g]
    if args.genes:
        return [g.strip() for g in args.genes.split(",") if g.strip()]
    return None


def cmd_impute(args) -> int:
    from . import impute
    from .io import write_result
    from .io.sdata import is_spatialdata

    out = Path(args.out)
    if out.suffix.lower() not in (".h5ad", ".rds", ".zarr"):
        raise SpatialImputeInputError("--out", "a path ending in .h5ad, .rds or .zarr", repr(args.out),
                                      "e.g. --out imputed.h5ad")
    if out.suffix.lower() == ".rds" and Path(args.spatial).suffix.lower() != ".rds":
        raise SpatialImputeInputError("--out", "an .h5ad path when --spatial is not an .rds file", repr(args.out),
                                      "write .rds only when the spatial input is an .rds file")
    _check_out(out)
    params = _parse_params(args.param)
    genes = _genes(args)
    spatial, sp_info = _read_folder(args.spatial, args.platform) if Path(args.spatial).is_dir() else \
        _read(args.spatial, "--spatial")
    reference, _ = _read(args.reference, "--reference")
    kwargs = dict(
        spatial_layer=args.spatial_layer, reference_layer=args.reference_layer, spatial_key=args.spatial_key,
        labels_key=args.labels_key, reference_labels_key=args.reference_labels_key, num_threads=args.threads,
        case_insensitive_genes=args.case_insensitive_genes, sample_key=args.sample_key,
    )
    blocks = dict(block_size=args.block_size, scheduler=args.scheduler, dtype=args.dtype, resume=args.resume)
    out_of_core = out.suffix.lower() == ".zarr" and not is_spatialdata(spatial)
    if is_spatialdata(spatial):
        kwargs.update(table_key=args.table_key, return_anndata=out.suffix.lower() != ".zarr")
    start = time.perf_counter()
    result = impute(spatial, reference, method=args.method, genes=genes, seed=args.seed, device=args.device,
                    out=out if out_of_core else None, **blocks, **kwargs, **params)
    if out.suffix.lower() == ".rds":
        from . import rbridge

        rbridge.write_rds(result, sp_info, out)
    elif not out_of_core:
        write_result(result, out)
    table = result.tables["imputed"] if is_spatialdata(result) else result
    if args.method == "auto":
        from .model.auto import ensemble_summary

        print(ensemble_summary(table).to_string(float_format="%.3f"))
    print(f"imputed {table.n_vars} genes for {table.n_obs} cells with {args.method} "
          f"in {time.perf_counter() - start:.1f} s -> {out}")
    return 0


def cmd_benchmark(args) -> int:
    from .benchmark import markdown_table, run_benchmark

    settings.num_threads = args.threads
    method_params: dict[str, dict] = {}
    for key, value in _parse_params(args.param).items():
        method, sep, name = key.partition(".")
        if not sep or not name:
            raise SpatialImputeInputError("--param", "METHOD.KEY=VALUE", repr(key), "e.g. --param knn.k=30")
        method_params.setdefault(method, {})[name] = value
    spatial = _read(args.spatial, "--spatial")[0] if args.spatial else None
    reference = _read(args.reference, "--reference")[0] if args.reference else None
    result = run_benchmark(
        dataset=args.dataset, spatial=spatial, reference=reference, methods=args.methods,
        out=args.out, n_folds=args.folds, seed=args.seed, device=args.device, data_dir=args.data_dir,
        method_params=method_params, labels_key=args.labels_key, clustering=not args.no_clustering,
        save_predictions=args.save_predictions,
    )
    print(markdown_table(result.to_dict()))
    print(f"results in {args.out}/")
    return 0


def cmd_simulate(args) -> int:
    from ._io import write_h5ad
    from .datasets import simulate_pair

    spatial, reference, truth = simulate_pair(n_spatial=args.n_spatial, n_reference=args.n_reference,
                                              n_genes=args.n_genes, n_panel=args.n_panel, seed=args.seed)
    out = Path(args.out)
    for name, adata in (("spatial", spatial), ("reference", reference), ("truth", truth)):
        write_h5ad(adata, out / f"{name}.h5ad")
    print(f"wrote spatial ({spatial.n_obs} x {spatial.n_vars}), reference ({reference.n_obs} x {reference.n_vars}) "
          f"and truth to {out}/")
    return 0


def cmd_demo(args) -> int:
    import numpy as np

    from . import impute
    from ._io import write_h5ad
    from .benchmark import gene_metrics
    from .datasets import simulate_pair
    from .plotting import save_figure, spatial_maps

    out = Path(args.out)
    start = time.perf_counter()
    spatial, reference, truth = simulate_pair(seed=args.seed)
    print(f"simulated tissue: {spatial.n_obs} spatial cells x {spatial.n_vars} panel genes; "
          f"reference {reference.n_obs} cells x {reference.n_vars} genes")
    result = impute(spatial, reference, method=args.method, seed=args.seed, device=args.device, num_threads=args.threads)
    measured = truth[:, result.var_names]
    metrics = gene_metrics(measured.X, result.X)
    baseline = gene_metrics(measured.X, np.broadcast_to(reference[:, result.var_names].X.mean(axis=0), measured.shape))
    rel = result.var["reliability"].to_numpy()
    top = rel >= np.nanmedian(rel) if np.isfinite(rel).any() else np.ones(rel.size, bool)
    write_h5ad(result, out / "imputed.h5ad")
    genes = list(result.var.sort_values("reliability", ascending=False).index[:2]) + list(
        result.var.sort_values("reliability").index[:1])
    save_figure(spatial_maps(truth, result, genes, title=f"SpatialImpute demo ({args.method})"), out / "spatial_maps.png")
    if args.method == "auto":
        from .model.auto import ensemble_summary

        print(ensemble_summary(result).to_string(float_format="%.3f"))
    print(f"imputed {result.n_vars} genes the panel lacks with {args.method} in {time.perf_counter() - start:.1f} s")
    print(f"accuracy against the simulator's truth (mean over genes): SPCC {metrics['spcc'].mean():.3f}, "
          f"PCC {metrics['pcc'].mean():.3f}, SSIM {metrics['ssim'].mean():.3f}, RMSE {metrics['rmse'].mean():.3f}")
    print(f"  per-gene mean (no information): SPCC {baseline['spcc'].mean():.3f}")
    print(f"  top half of genes by reliability: SPCC {metrics['spcc'][top].mean():.3f}")
    print(f"wrote {out / 'imputed.h5ad'} and {out / 'spatial_maps.png'}")
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    from ._version import __version__
    from .model.registry import available_methods

    print(f"spatialimpute {__version__} (Python {platform.python_version()}, torch {torch.__version__})")
    print(f"methods: {', '.join(available_methods())}")
    cuda = torch.cuda.is_available()
    print(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if cuda else 'cpu'}; torch threads {torch.get_num_threads()}")
    try:
        from .benchmark import list_datasets

        names = list_datasets(args.data_dir)
        print(f"benchmark datasets: {', '.join(names) if names else 'none found'}")
    except SpatialImputeInputError as err:
        print(f"benchmark datasets: none ({err.found})")
    try:
        import rpy2  # noqa: F401

        print("R bridge (.rds): available")
    except ImportError:
        print("R bridge (.rds): not installed (pip install 'spatialimpute[r]')")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``spatialimpute`` command."""
    parser = argparse.ArgumentParser(
        prog="spatialimpute",
        description="Impute the genes an imaging spatial-transcriptomics panel did not measure, from a scRNA-seq reference.",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, seed_default=0):
        p.add_argument("--seed", type=int, default=seed_default, help="random seed (default %(default)s)")
        p.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda[:N] (default %(default)s)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all)")

    p = sub.add_parser("impute", help="impute genes for a spatial dataset", description=(
        "Impute genes for the cells of SPATIAL from REFERENCE and write an AnnData of imputed expression "
        "(var['reliability'] = predicted accuracy per gene)."))
    p.add_argument("--spatial", required=True, help="spatial counts: .h5ad (coordinates in obsm), .rds (R extra), or "
                   "a SpatialData .zarr store or Xenium / MERSCOPE / CosMx output folder (spatialdata extra)")
    p.add_argument("--platform", choices=["xenium", "merscope", "cosmx"],
                   help="instrument of a --spatial output folder (default: recognised from its files)")
    p.add_argument("--table-key", default="table", help="cell table of SpatialData input (default %(default)s)")
    p.add_argument("--sample-key", help="obs column naming each cell's section; cells of different sections are "
                   "never neighbours (SpatialData: the table's regions by default)")
    p.add_argument("--reference", required=True, help="scRNA-seq reference counts (.h5ad or .rds)")
    p.add_argument("--out", required=True, help="output: .h5ad; .zarr (SpatialData input: the SpatialData with the "
                   "imputed table; otherwise an AnnData zarr store written block by block, out of core); or .rds "
                   "when the input is .rds")
    p.add_argument("--block-size", type=int, help="cells per prediction block (default: about 16 million values a "
                   "block)")
    p.add_argument("--scheduler", help="dask scheduler of the blocks: threads (default), synchronous, or the address "
                   "of a dask.distributed scheduler (tcp://HOST:PORT; distributed extra)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="values of the imputed matrix (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="with an AnnData .zarr --out: continue an interrupted run "
                   "from its partial store (.NAME.partial beside it) without recomputing finished blocks")
    p.add_argument("--method", default="auto", help=_METHOD_HELP)
    p.add_argument("--genes", help="comma-separated genes to impute (default: every reference gene the panel lacks)")
    p.add_argument("--genes-file", help="file with one gene per line (instead of --genes)")
    p.add_argument("--spatial-layer", help="layer of the spatial object holding raw counts (default X)")
    p.add_argument("--reference-layer", help="layer of the reference holding raw counts (default X)")
    p.add_argument("--spatial-key", default="spatial", help="obsm key of the coordinates (default %(default)s)")
    p.add_argument("--labels-key", help="obs column with cell labels (used by stgnet)")
    p.add_argument("--reference-labels-key", help="reference obs column with labels (default: --labels-key)")
    p.add_argument("--case-insensitive-genes", action="store_true",
                   help="match spatial and reference gene names ignoring case (reported in a warning)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method hyper-parameter, repeatable")
    common(p)
    p.set_defaults(func=cmd_impute)

    p = sub.add_parser("benchmark", help="leave-genes-out cross-validation of methods", description=(
        "Score methods with 5-fold leave-genes-out cross-validation (docs/benchmark.md) and write per-gene CSV, "
        "summary JSON, a markdown table and a figure."))
    p.add_argument("--dataset", help="name of a benchmark pair in the data directory")
    p.add_argument("--spatial", help="spatial .h5ad (instead of --dataset)")
    p.add_argument("--reference", help="reference .h5ad (instead of --dataset)")
    p.add_argument("--methods", default="knn", help="comma-separated methods (default %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--folds", type=int, default=5, help="gene folds (default %(default)s)")
    p.add_argument("--data-dir", help="directory of benchmark pairs (default $SPATIALIMPUTE_DATA_DIR or ../shared/data)")
    p.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE", help="method hyper-parameter, repeatable")
    p.add_argument("--labels-key", default="cell_type", help="spatial obs column of annotated labels for clustering "
                   "agreement, when present (default %(default)s)")
    p.add_argument("--no-clustering", action="store_true", help="skip the Leiden clustering agreement")
    p.add_argument("--save-predictions", action="store_true", help="also write each method's assembled prediction (.h5ad)")
    common(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("simulate", help="write a simulated spatial/reference pair with its truth")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-spatial", type=int, default=2000)
    p.add_argument("--n-reference", type=int, default=3000)
    p.add_argument("--n-genes", type=int, default=200)
    p.add_argument("--n-panel", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="simulate a tissue, impute the genes its panel lacks, plot and score")
    p.add_argument("--out", default="demo_out", help="output directory (default %(default)s)")
    p.add_argument("--method", default="auto", help=_METHOD_HELP)
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, devices, methods and datasets available")
    p.add_argument("--data-dir", help="directory of benchmark pairs")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spatialimpute`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.no_progress:
        settings.progress = False
    try:
        if getattr(args, "threads", None) is not None:
            check_int(args.threads, "--threads", minimum=1)
        return args.func(args)
    except (SpatialImputeInputError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"spatialimpute {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug or an environment problem: one line unless --debug
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else ""
        print(f"spatialimpute {args.command}: internal error: {type(err).__name__}: {message} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
