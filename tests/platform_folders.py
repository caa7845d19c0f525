"""Tiny but valid instrument output folders, written in the file formats the spatialdata-io
readers expect (10x Xenium, Vizgen MERSCOPE, NanoString CosMx). Generated per test from a
simulated panel: no binary fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def _counts(spatial) -> np.ndarray:
    return np.rint(np.asarray(spatial.X)).astype(np.int32)


def write_xenium(spatial, path: Path) -> Path:
    """Xenium Onboard Analysis 1.x: experiment.xenium, cell_feature_matrix.h5, cells.parquet."""
    import h5py
    import scipy.sparse as sp

    path.mkdir(parents=True)
    (path / "experiment.xenium").write_text(json.dumps(
        {"pixel_size": 0.2125, "analysis_sw_version": "xenium-1.9.0.0", "run_name": "test"}))
    counts = _counts(spatial)
    cells = [f"cell{i:04d}" for i in range(spatial.n_obs)]
    genes = list(spatial.var_names)
    csc = sp.csc_matrix(counts.T)  # 10x: features x barcodes, CSC
    with h5py.File(path / "cell_feature_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(cells, dtype="S")
        m["data"] = csc.data.astype(np.int32)
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feat = m.create_group("features")
        feat["id"] = np.array([f"ENSG{i:05d}" for i in range(len(genes))], dtype="S")
        feat["name"] = np.array(genes, dtype="S")
        feat["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        feat["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
    xy = spatial.obsm["spatial"]
    pd.DataFrame({
        "cell_id": cells, "x_centroid": xy[:, 0], "y_centroid": xy[:, 1],
        "transcript_counts": counts.sum(axis=1), "control_probe_counts": 0, "control_codeword_counts": 0,
        "total_counts": counts.sum(axis=1), "cell_area": 50.0, "nucleus_area": 20.0,
    }).to_parquet(path / "cells.parquet")
    return path


def write_merscope(spatial, path: Path) -> Path:
    """MERSCOPE region folder: cell_by_gene.csv, cell_metadata.csv, images/ transform."""
    (path / "images").mkdir(parents=True)
    np.savetxt(path / "images" / "micron_to_mosaic_pixel_transform.csv",
               np.array([[9.2, 0.0, 100.0], [0.0, 9.2, 50.0], [0.0, 0.0, 1.0]]), delimiter=" ")
    counts = pd.DataFrame(_counts(spatial), columns=list(spatial.var_names))
    counts["Blank-1"] = 0
    cells = [str(1000 + i) for i in range(spatial.n_obs)]
    counts.index = pd.Index(cells, name="cell")
    counts.to_csv(path / "cell_by_gene.csv")
    xy = spatial.obsm["spatial"]
    pd.DataFrame({"fov": 0, "volume": 100.0, "center_x": xy[:, 0], "center_y": xy[:, 1],
                  "min_x": xy[:, 0] - 3, "max_x": xy[:, 0] + 3, "min_y": xy[:, 1] - 3, "max_y": xy[:, 1] + 3},
                 index=pd.Index(cells, name="EntityID")).to_csv(path / "cell_metadata.csv")
    return path


def write_cosmx(spatial, path: Path, fov, dataset_id: str = "Run1000_S1_Half") -> Path:
    """CosMx flat files of several FOVs (``fov`` per cell): local coordinates overlap across
    FOVs; global = local + the FOV's offset."""
    (path / "CellComposite").mkdir(parents=True)
    (path / "CellLabels").mkdir()
    fov = np.asarray(fov)
    cell_id = np.zeros(spatial.n_obs, dtype=int)
    for f in np.unique(fov):
        cell_id[fov == f] = np.arange(1, (fov == f).sum() + 1)
    counts = pd.DataFrame(_counts(spatial), columns=list(spatial.var_names))
    counts.insert(0, "cell_ID", cell_id)
    counts.insert(0, "fov", fov)
    counts.to_csv(path / f"{dataset_id}_exprMat_file.csv", index=False)
    local = spatial.obsm["spatial"]
    offset = np.where(fov[:, None] == fov.min(), 0.0, 5000.0) * np.array([1.0, 0.0])
    pd.DataFrame({"fov": fov, "cell_ID": cell_id, "Area": 500,
                  "CenterX_local_px": local[:, 0], "CenterY_local_px": local[:, 1],
                  "CenterX_global_px": local[:, 0] + offset[:, 0], "CenterY_global_px": local[:, 1] + offset[:, 1]}
                 ).to_csv(path / f"{dataset_id}_metadata_file.csv", index=False)
    pd.DataFrame({"fov": np.unique(fov), "x_global_px": 0.0, "y_global_px": 0.0}).to_csv(
        path / f"{dataset_id}_fov_positions_file.csv", index=False)
    return path
