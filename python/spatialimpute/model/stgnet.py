"""STGNET: multi-stage WGAN-GP imputation with multi-view GCN refinement (ALGORITHMS.md
Part A, with the project's decisions: shared label vocabulary, no test-set leakage, panel
extension, presets).

Scale conventions
-----------------
Every generator ends in a sigmoid, so the GAN stages work on values in [0, 1].

``input_scale="cell_max"`` (the original; paper preset): per cell, counts / library size *
1e4, log1p, then divided by the cell's maximum over the genes it sees. For a spatial cell
the maximum is taken over the *feature* (panel) genes only (the original took it over
held-out genes too: a leak). Back to the project's log-normalised scale
(``log1p(counts / lib * median lib)``): ``v -> log1p(expm1(v * M) * median_lib / 1e4)``.
With ``M`` = the cell's own maximum (``output_scale="cell_max"``) this inverts the forward
scaling exactly, which is right only if the model predicted the cell's own scaled value;
the original's imputations are essentially label-conditional and do not carry the ``1 / M``
factor, and on sparse imaging data ``M`` is *anti*-correlated with expression (osmFISH fold
0: SPCC 0.19 -> 0.165). ``output_scale="median_max"`` uses the data set's median ``M`` for
every cell: a per-gene monotone map.

``input_scale="gene_max"`` (fast preset): the project's log-normalised values divided by
each gene's maximum over the reference cells; predictions are multiplied back. A cell's
maximum is one noisy gene on imaging data, and per-cell division scrambles the cell
ranking of every other gene: a ridge regression from panel to held-out genes, fitted on
the reference and applied to the spatial cells, scored SPCC 0.153 / 0.197 on osmFISH folds
0 / 3 on the per-cell-max scale and 0.195 / 0.221 on this one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections import OrderedDict

import numpy as np
import torch

from .._settings import derive_seed, progress
from .._validation import SpatialImputeInputError, check_choice
from ..data.labels import shared_label_codes, transfer_labels
from ..data.neighbors import knn_cosine, weighted_neighbor_mean
from ..data.normalize import standardize_genes
from ..data.spatial_graph import feature_knn_graph, radius_for_mean_degree, radius_graph, row_normalized_propagation
from ..module import stgnet as S
from ..nn.critics import ConvCritic
from ..nn.gcn import MultiViewGCN
from ..nn.generators import ConvDataGenerator
from ..nn.unet import ImputerEnsemble, UNetImputer
from ._base import BaseImputer

#: Hyper-parameters fixed by each preset (user values override them).
PRESETS: dict[str, dict] = {
    "paper": {
        "g1_channels": [512, 256, 128, 64, 32],
        "g1_bn_eps_quirk": True,
        "critic_map": 64,
        "unet_map": 128,
        "unet_ngf": 64,
        "unet_levels": 5,
        "s1_epochs": 500,
        "s2_epochs": 500,
        "s3_epochs": 500,
        "batch_size": 100,
        "n_critic": 5,
        "s1_lr": 1e-4,
        "s2_lr": 1e-5,
        "s3_lr": 1e-5,
        "s3_update_every": 5,
        "s3_critic": True,
        "adversarial": True,
        "min_steps": 0,
        "s2_masks": "zeros",
        "unlabelled": "leiden",
        "input_scale": "cell_max",
        "unet_mask_input": False,
        "network_input": "scaled",
        "s3_init": "random",
        "s3_ema_decay": 0.0,
        "s4_teacher_weight": 0.0,
        "refine": True,
        "n_teachers": 1,
        "s2_target_neighbors": 1,
        "s2_panel_steps": 0,
    },
    "fast": {
        "g1_channels": [32, 16],
        "g1_bn_eps_quirk": True,
        "critic_map": 8,
        "unet_map": 16,
        "unet_ngf": 8,
        "unet_levels": 3,
        "s1_epochs": 10,
        "s2_epochs": 10,
        "s3_epochs": 10,
        "batch_size": 100,
        "n_critic": 1,
        "s1_lr": 1e-3,
        "s2_lr": 1e-3,
        "s3_lr": 1e-3,
        "s3_update_every": 1,
        "s3_critic": False,
        "adversarial": False,
        "min_steps": 1000,
        "s2_masks": "genes",
        "unlabelled": "single",
        "input_scale": "gene_max",
        "unet_mask_input": True,
        "network_input": "standardized",
        "s3_init": "teacher",
        "s3_ema_decay": 0.99,
        "s4_teacher_weight": 0.5,
        "refine": False,
        "n_teachers": 3,
        "s2_target_neighbors": 15,
        "s2_panel_steps": 300,
    },
}

_PRESET_KEYS = tuple(PRESETS["paper"])

#: The networks a trained model saves (``G2_general``: the teachers before the panel fine-tuning).
_NETWORKS = ("G1", "G2", "G2_general", "G3", "S5")

# Stages 1-2 see only the reference: trained once per (reference, labels, params, seed) in a
# process and reused across CV folds. Small LRU; state dicts are kept on the CPU.
_REFERENCE_CACHE: "OrderedDict[str, dict]" = OrderedDict()
_REFERENCE_CACHE_SIZE = 4


def clear_reference_cache() -> None:
    """Forget the stage 1-2 networks cached in this process."""
    _REFERENCE_CACHE.clear()


def stgnet_scale(counts: np.ndarray, library_size: np.ndarray, max_cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """STGNET's input scale: CP10k, log1p, divide by the per-cell maximum.

    Parameters
    ----------
    counts
        Cells x genes raw values.
    library_size
        Per-cell library size (over all genes of the object).
    max_cols
        Columns the per-cell maximum is taken over (default all).

    Returns
    -------
    scaled, cell_max
        Scaled values (float32; may exceed 1 outside ``max_cols``) and the per-cell maximum
        of ``log1p(CP10k)`` (1 where a cell has nothing, to avoid division by zero).
    """
    lib = np.asarray(library_size, dtype=np.float64)
    lib = np.where(lib > 0, lib, 1.0)
    logn = np.log1p(np.asarray(counts, dtype=np.float64) / lib[:, None] * 1e4)
    sub = logn if max_cols is None else logn[:, max_cols]
    cell_max = sub.max(axis=1) if sub.shape[1] else np.ones(logn.shape[0])
    cell_max = np.where(cell_max > 0, cell_max, 1.0)
    return (logn / cell_max[:, None]).astype(np.float32), cell_max


def stgnet_unscale(values: np.ndarray, cell_max: np.ndarray, median_library_size: float) -> np.ndarray:
    """Map STGNET-scale values back to the project's log-normalised scale (per cell)."""
    logn = np.asarray(values, dtype=np.float64) * cell_max[:, None]
    return np.log1p(np.expm1(np.clip(logn, 0.0, None)) * (median_library_size / 1e4)).astype(np.float32)


def match_quantiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map each column of ``values`` onto the distribution of the same column of ``reference``.

    A value of rank ``r`` (average rank for ties) among ``n`` cells becomes the
    ``(r - 1/2) / n`` quantile of the reference column: a per-gene monotone map, so every
    gene keeps its cell ranking while its marginal distribution becomes the reference's.

    Parameters
    ----------
    values
        ``(N, G)`` spatial values.
    reference
        ``(M, G)`` reference values of the same genes.

    Returns
    -------
    np.ndarray
        ``(N, G)`` float32.
    """
    from scipy.stats import rankdata

    values = np.asarray(values)
    q = (rankdata(values, axis=0) - 0.5) / max(values.shape[0], 1)
    out = np.empty(values.shape, dtype=np.float32)
    for j in range(values.shape[1]):
        out[:, j] = np.quantile(reference[:, j], q[:, j])
    return out


class STGNET(BaseImputer):
    """STGNET imputation (multi-stage WGAN-GP + multi-view GCN refinement).

    Stage 1 trains a label-conditional generator on the reference, stage 2 a U-Net imputer
    on the reference (entries ``x = 0`` are treated as missing), stage 3 a spatial U-Net
    imputer conditioned on labels and coordinates, taught by the frozen stage-2 imputer
    (observed genes keep their values; held-out and panel-extension genes get mask 0),
    stage 4 runs it on every spatial cell and stage 5 refines the result with two GCNs
    (spatial radius graph, cosine feature kNN graph), attention fusion and a ZINB decoder.

    Parameters
    ----------
    spatial, reference, genes, seed, device, labels_key, reference_labels_key, **kwargs
        See :class:`~spatialimpute.model._base.BaseImputer`. With labels the given labels
        are used (one shared vocabulary); without reference labels, ``unlabelled="leiden"``
        (paper preset) clusters the reference with Leiden and transfers the labels to
        spatial cells on panel genes only, ``"single"`` (fast preset) uses one class.
    **params
        See :meth:`default_params`. ``preset`` (``"fast"`` default, or ``"paper"``) fills
        every GAN-stage parameter left at ``None``.

    Notes
    -----
    Stage 2 of the original (``s2_masks="zeros"``, the paper preset) regresses masked
    entries onto *samples of the cell's class* drawn from stage 1, with the reference's zeros
    as masks; its imputation of an unobserved gene is essentially the gene's class level, so
    accuracy is bounded by the labels' resolution. The fast preset trains stage 2 as a
    masked-gene imputer instead (``s2_masks="genes"``): each gene of each reference cell is
    hidden with probability ``s2_mask_fraction`` and the target is the cell itself, the task
    stage 3 then distils on spatial cells (whose held-out genes are hidden). Stage 1 only
    feeds the original stage 2, so it is skipped with ``s2_masks="genes"``. Measured on
    osmFISH fold 0 (one thread): final SPCC 0.137 (zeros) -> 0.146 (genes).

    Spatial inputs are mapped onto the reference's per-gene distributions
    (``spatial_alignment="quantile"``, :func:`match_quantiles`: monotone per gene, so each
    gene keeps its cell ranking) before stages 3-5: the networks are trained on reference
    cells, and two technologies differ by large per-gene factors. Measured on osmFISH fold 0
    with Leiden labels: teacher SPCC 0.094 -> 0.134, final 0.146 -> 0.210 (together with
    transferring labels on per-gene z-scored genes, ``label_transfer_standardize``).

    Without given labels the fast preset conditions on one class (``unlabelled="single"``)
    rather than on Leiden clusters of the reference (``"leiden"``, the original's route):
    clusters computed on all reference genes encode the held-out genes, so a stage-2
    imputer trained with them leans on the label, and the label transferred to a spatial
    cell from its panel genes cannot carry that information. Measured on osmFISH folds 0 /
    3 (with ``input_scale="gene_max"``): teacher SPCC 0.117 / 0.124 with Leiden labels,
    0.217 / 0.211 with one class; final 0.184 / 0.169 -> 0.215 / 0.223. Given labels are
    always used.

    The fast preset's U-Nets read each gene z-scored within its data set
    (``network_input="standardized"``) and also the mask (``unet_mask_input``, the paper's
    ``(x, m)`` input), while they still output the [0, 1] images stage 2 reconstructs: the
    quantile-aligned spatial values tie many cells at the reference's zero (85% zeros
    after alignment vs 75% measured on gastrulation), and without the mask the network
    cannot tell a hidden gene from an observed one. Teacher SPCC, fold 0 (one thread):
    gastrulation 0.040 -> 0.115, Drosophila 0.413 -> 0.470 (0.435 with the mask alone).
    ``G3`` starts as a copy of the teacher (``s3_init="teacher"``): with a fresh
    initialisation the student fell below the stronger teacher on Drosophila (fold 0
    stage-4 SPCC 0.438 vs 0.477 from the teacher's weights).

    Two more fast-preset choices make the teacher less noisy. Its stage 2 regresses onto
    each reference cell's mean over its 15 nearest reference cells rather than onto the
    single noisy profile (``s2_target_neighbors``), and the teacher is the mean of three
    imputers trained from different initialisations and mask draws (``n_teachers``). With
    one imputer the seed alone moved osmFISH fold 0 stage-4 SPCC between 0.187 and 0.240
    (three seeds). Whole 5-fold CV (mean SPCC, seed 0, one thread), one imputer with
    stage 5 checked per fold -> three with smoothed targets, stopping at stage 4:
    osmFISH 0.242 -> 0.271, gastrulation 0.112 -> 0.110, Drosophila 0.462 -> 0.490,
    seqFISH embryo 0.047 -> 0.044 (175 cells, per-gene SE 0.03). Counting each gene's
    squared error in units of its reference variance, as the rank metrics count every
    gene alike, was measured with them and dropped: 0.248 / 0.105 / 0.492 / 0.024.

    Stages 1-2 learn random gaps once per reference and are reused across folds; then each
    teacher is fine-tuned for ``s2_panel_steps`` = 300 mini-batches with the spatial panel
    as its one mask (:meth:`_adapt_teachers_to_panel`), the gap it will fill. Whole 5-fold
    CV (mean SPCC over folds, stage 4, seed 0, one thread), without -> with: osmFISH 0.269
    -> 0.271, gastrulation 0.111 -> 0.126, Drosophila 0.490 -> 0.496, seqFISH embryo 0.045
    -> 0.034 (its teacher 0.043 -> 0.048; the 175-cell student moved it). 1000 steps gave
    Drosophila folds 0-3 0.5013 / 0.4428 / 0.5747 / 0.4878 against 0.4942 / 0.4435 /
    0.5758 / 0.4818, at three times the cost. Also hiding a fifth of the panel genes in
    the fine-tuning (``s2_panel_mask_fraction=0.2``) gave osmFISH 0.280, Drosophila 0.499,
    embryo 0.041, but gastrulation 0.105: its student fell below its teacher on 4 of 5
    folds (above it on 4 of 5 without).

    The student is the moving average of its parameters over stage 3 (``s3_ema_decay`` =
    0.99), with its BatchNorm statistics re-estimated for them, not the last Adam iterate:
    with the last iterate the per-fold result swung widely: gastrulation fold 3 scored
    from 0.035 to 0.141 across small variations of stage 3 (three students, a cosine
    learning rate, averaging without re-estimating BatchNorm), its teacher 0.087-0.088.
    Whole 5-fold CV (stage 4, seed 0, one thread), last iterate -> averaged: osmFISH
    0.271 -> 0.274 (better on 4 of 5 folds), Drosophila 0.496 -> 0.498, gastrulation
    0.126 -> 0.121 (per fold 0.122 / 0.124 / 0.127 / 0.100 / 0.133 against 0.102 / 0.120 /
    0.140 / 0.141 / 0.126: the 0.126 rested on one lucky fold; three students averaged
    gave 0.121 too, at three times the stage-3 cost).

    Stage 4 is the mean of the student and the teacher ensemble (``s4_teacher_weight`` =
    0.5), not the student alone. The student gains where it has many cells to learn from
    and loses on the 175-cell embryo, where one network stands in for the three-member
    ensemble (teacher member 0 alone, embryo folds 0 / 1: -0.003 / 0.051 against the
    ensemble's 0.003 / 0.058). Whole 5-fold CV (stage 4, seed 0, one thread), student /
    teacher / mean: osmFISH 0.274 / 0.267 / 0.275, Drosophila 0.498 / 0.495 / 0.498,
    gastrulation 0.121 / 0.109 / 0.117, embryo 0.035 / 0.048 / 0.047: the mean is the
    best on two pairs and 0.004 below the better of the two at worst (gastrulation), at
    the cost of one teacher pass over the cells. The student's gain on gastrulation does
    not come from its coordinates (zeroed at inference: folds 0 / 1 0.122 / 0.124,
    unchanged), nor from a denoised noise input (teacher averaged over 8 noise draws:
    0.109 / 0.113, unchanged), nor from BatchNorm statistics of the spatial cells
    (teacher's re-estimated on them: 0.109 / 0.113).

    Stage 5 as specified (the ZINB mean of a 64-dimensional fused embedding, 101 epochs)
    smooths the stage-4 output over spatial and expression neighbours. Smoothing a good
    per-cell prediction mixes neighbouring cell types: on osmFISH fold 0 one step of the
    row-normalised spatial propagation alone lowers the stage-4 SPCC from 0.237 to 0.201,
    and stage 5 lowered it to 0.184 (fast preset, fold 0). The check on held-out panel
    genes (``refine="auto"``, :meth:`_check_refinement`) is too noisy to decide per fold:
    with the fast preset's teacher it ran stage 5 on 1 osmFISH fold (stage-4 SPCC 0.293 ->
    0.241), on all 5 Drosophila folds (mean change -0.001) and on 1 embryo fold, and never
    on gastrulation. The fast preset therefore stops at stage 4 (``refine=False``);
    ``refine=True`` (the paper preset) always runs stage 5.

    Other fast-preset choices, by measurement on osmFISH: a 16x16 U-Net map with 3 levels
    and 8 base channels, G1 trunk (32, 16), no critics and no adversarial term (with them,
    stage 2's correlation with the class means it regresses onto was 0.47 after 450 steps
    instead of 0.92 without), one generator update per batch, Adam lr 1e-3, at least
    ``min_steps`` mini-batches per GAN stage, stages 1-2 cached across folds, BatchNorm
    running statistics and U(0, 1) noise at inference (batch statistics: teacher SPCC 0.05
    vs 0.09 with running statistics), labels from Leiden at resolution 2 transferred by a
    15-neighbour vote (label-mean SPCC 0.10 vs 0.09 for resolution 0.5 + single best
    Pearson match).

    The final prediction is the stage-5 ZINB mean of the target genes mapped back to the
    log-normalised scale (see the module docstring). Reliability scores come from the
    generic :mod:`spatialimpute.reliability` model fitted on STGNET's own held-out panel
    genes, predicted by the teacher as stages 1-2 left it (``reliability_heldout="teacher"``).
    The model maps descriptors of a prediction (its spatial autocorrelation, the variance
    it keeps) to accuracy, so the target genes are described through that same teacher
    (:meth:`_reliability_targets`), not through the final prediction, which other networks
    make (the panel-adapted teachers distilled into the coordinate-aware student).
    Calibration (Spearman of reliability with SPCC over genes, whole 5-fold CV, seed 0,
    last-iterate student), final prediction -> teacher described: gastrulation 0.130 ->
    0.319, osmFISH 0.498 -> 0.551, Drosophila 0.201 -> 0.196; mean SPCC of the more
    reliable half 0.130 -> 0.151, 0.328 -> 0.343, 0.517 -> 0.507.
    """

    method_name = "stgnet"

    @classmethod
    def default_params(cls) -> dict:
        """Hyper-parameters.

        ``preset``: ``"fast"`` | ``"paper"``; the GAN-stage keys (``g1_channels``,
        ``critic_map``, ``unet_map``, ``unet_ngf``, ``unet_levels``, ``s{1,2,3}_epochs``,
        ``batch_size``, ``n_critic``, ``s{1,2,3}_lr``, ``s3_update_every``, ``s3_critic``,
        ``g1_bn_eps_quirk``, ``min_steps``: each GAN stage runs at least this many
        mini-batches; ``adversarial``: train the critics ``D1``/``D2`` (and ``D3``) and add
        the ``adv_weight`` term, or drop them and train every generator by its MSE term
        alone) default to ``None`` = the preset's value.
        ``latent_dim`` (128), ``gp_weight`` (10), ``adv_weight`` (0.1),
        ``inference_noise`` (``"uniform"`` | ``"normal_code"``), ``bn_inference``
        (``"running_stats"`` | ``"batch_stats_code"``), ``spatial_degree`` (target mean
        degree of the radius graph, 4), ``feature_k`` (5), ``s5_epochs`` (101), ``s5_lr``
        (0.01), ``s5_weight_decay`` (1e-4), ``s5_hidden`` ([128, 64]), ``zinb_weight`` (1),
        ``sr_weight`` (1), ``kl_weight`` (10), ``sr_mode`` (``"auto"``: exact blockwise up to
        ``sr_exact_max_cells`` cells, sampled negatives above; or ``"exact"`` /
        ``"sampled"``), ``sr_negatives`` (64), ``refine`` (preset key: True = run stage 5,
        the original | False = stop at stage 4 | ``"auto"`` = run stage 5 only when it
        raises the SPCC of held-out panel genes, see :meth:`_check_refinement`),
        ``refine_check_cells`` (5000),
        ``label_transfer`` (``"knn"`` vote of ``label_transfer_k`` = 15 most correlated
        reference cells | ``"pearson"``: the single best, as the original),
        ``label_transfer_standardize`` (z-score each panel gene within each data set before
        the transfer, True; False = the original),
        ``leiden_resolution`` (2.0; the original used 0.5), ``output_scale``
        (``"median_max"`` | ``"cell_max"``, see the module docstring), ``s2_masks`` (preset
        key: ``"zeros"`` = the original's masks and class-sample targets, ``"genes"`` =
        masked-gene training on real reference cells, see Notes), ``s2_mask_fraction``
        (the share of genes hidden per cell with ``s2_masks="genes"``; ``"auto"``: see
        :meth:`_mask_fraction`),
        ``spatial_alignment`` (``"quantile"``: spatial genes mapped onto the reference's
        per-gene distributions | ``"none"``: the original),
        ``unlabelled`` (preset key: ``"leiden"`` = cluster the reference and transfer the
        labels, the original | ``"single"`` = one class when no labels are given),
        ``input_scale`` (preset key: ``"cell_max"`` = the original per-cell maximum scale |
        ``"gene_max"`` = log-normalised values over each gene's reference maximum; see the
        module docstring),
        ``network_input`` (preset key: ``"scaled"`` = the U-Nets read the scaled images they
        reconstruct, the original | ``"standardized"`` = they read each gene z-scored within
        its data set, and still output the scaled images; see Notes),
        ``unet_mask_input`` (preset key: False = the mask only blends noise into the input,
        the original code | True = the U-Nets also read the mask, the paper's ``(x, m)``),
        ``s3_init`` (preset key: ``"random"`` = ``G3`` starts from a fresh initialisation, the
        original | ``"teacher"`` = ``G3`` starts as a copy of ``G2`` whose coordinate input
        is switched off, see :meth:`~spatialimpute.nn.unet.UNetImputer.init_from_teacher`),
        ``s3_ema_decay`` (preset key: 0 = ``G3`` is its last iterate, the original | ``d`` =
        the exponential moving average of its parameters over stage 3 with decay ``d``, see
        Notes),
        ``s4_teacher_weight`` (preset key: 0 = stage 4 is the student ``G3`` alone, the
        original | ``w`` = ``(1 - w)`` student + ``w`` teacher ensemble ``G2``, see Notes),
        ``n_teachers`` (preset key: the teacher stage 3 distils is the mean of this many
        independently initialised and trained stage-2 imputers, 1 = the original;
        :class:`~spatialimpute.nn.unet.ImputerEnsemble`),
        ``s2_target_neighbors`` (preset key: 1 = stage 2 regresses onto the cell itself, the
        original | ``k`` = onto its mean over its ``k`` nearest reference cells, see
        :meth:`_smoothed_reference_images`),
        ``s2_panel_steps`` (preset key: 0 = the original | ``n`` = after stages 1-2, each
        teacher is fine-tuned for ``n`` mini-batches with the spatial panel as its mask, see
        :meth:`_adapt_teachers_to_panel`), ``s2_panel_mask_fraction`` (the share of panel
        genes also hidden per cell in that fine-tuning, 0),
        ``cache_reference_stages`` (reuse stages 1-2 in the process, True),
        ``reliability`` (True), ``reliability_heldout``: how STGNET's own held-out panel
        genes are predicted for the reliability model, and the target genes described
        (``"teacher"``: the stage-2 imputer that stage 3 distils, seconds;
        ``"teacher_refined"``: plus stage 5; ``"full"``: stages 3-5 retrained per internal
        fold, slow, and the final prediction described).
        """
        d = {k: None for k in _PRESET_KEYS}
        d.update({
            "preset": "fast",
            "latent_dim": 128,
            "gp_weight": 10.0,
            "adv_weight": 0.1,
            "inference_noise": "uniform",
            "bn_inference": "running_stats",
            "spatial_degree": 4.0,
            "feature_k": 5,
            "s5_epochs": 101,
            "s5_lr": 0.01,
            "s5_weight_decay": 1e-4,
            "s5_hidden": [128, 64],
            "zinb_weight": 1.0,
            "sr_weight": 1.0,
            "kl_weight": 10.0,
            "sr_mode": "auto",
            "sr_exact_max_cells": 20000,
            "sr_negatives": 64,
            "refine_check_cells": 5000,
            "label_transfer": "knn",
            "label_transfer_k": 15,
            "leiden_resolution": 2.0,
            "output_scale": "median_max",
            "s2_mask_fraction": "auto",
            "s2_panel_mask_fraction": 0.0,
            "spatial_alignment": "quantile",
            "label_transfer_standardize": True,
            "cache_reference_stages": True,
            "reliability": True,
            "reliability_heldout": "teacher",
        })
        return d

    # ------------------------------------------------------------------ configuration
    def _config(self) -> dict:
        p = dict(self.params)
        check_choice(p["preset"], "preset", list(PRESETS))
        for k, v in PRESETS[p["preset"]].items():
            if p[k] is None:
                p[k] = v
        check_choice(p["inference_noise"], "inference_noise", ["uniform", "normal_code"])
        check_choice(p["bn_inference"], "bn_inference", ["running_stats", "batch_stats_code"])
        check_choice(p["sr_mode"], "sr_mode", ["auto", "exact", "sampled"])
        check_choice(p["label_transfer"], "label_transfer", ["pearson", "knn"])
        check_choice(p["output_scale"], "output_scale", ["median_max", "cell_max"])
        check_choice(p["s2_masks"], "s2_masks", ["zeros", "genes"])
        check_choice(p["unlabelled"], "unlabelled", ["leiden", "single"])
        check_choice(p["input_scale"], "input_scale", ["cell_max", "gene_max"])
        check_choice(p["spatial_alignment"], "spatial_alignment", ["quantile", "none"])
        check_choice(p["network_input"], "network_input", ["scaled", "standardized"])
        check_choice(p["s3_init"], "s3_init", ["random", "teacher"])
        if p["refine"] not in (True, False, "auto"):
            raise SpatialImputeInputError("refine", 'True, False or "auto"', repr(p["refine"]),
                                          'pass refine=False (the fast preset), True (the paper) or "auto"')
        check_choice(p["reliability_heldout"], "reliability_heldout", ["teacher", "teacher_refined", "full"])
        for key in ("s1_epochs", "s2_epochs", "s3_epochs", "s5_epochs", "batch_size", "n_critic", "s3_update_every",
                    "feature_k", "min_steps", "label_transfer_k", "n_teachers", "s2_target_neighbors", "s2_panel_steps"):
            zero_ok = "epochs" in key or key in ("min_steps", "s2_panel_steps")
            if not isinstance(p[key], (int, np.integer)) or isinstance(p[key], bool) or p[key] < (0 if zero_ok else 1):
                raise SpatialImputeInputError(key, "a non-negative integer" if zero_ok else "a positive integer",
                                              repr(p[key]), f"pass e.g. {key}={PRESETS['fast'].get(key, 5)}")
        if not (p["spatial_degree"] > 0):
            raise SpatialImputeInputError("spatial_degree", "a positive number", repr(p["spatial_degree"]), "pass e.g. 4")
        p["s2_mask_fraction"] = self._mask_fraction(p["s2_mask_fraction"])
        decay = p["s3_ema_decay"]
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise SpatialImputeInputError("s3_ema_decay", "a number in [0, 1)", repr(decay),
                                          "pass e.g. s3_ema_decay=0.99 (the fast preset) or 0 (no averaging)")
        weight = p["s4_teacher_weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise SpatialImputeInputError("s4_teacher_weight", "a number in [0, 1]", repr(weight),
                                          "pass e.g. s4_teacher_weight=0.5 (the fast preset) or 0 (the student alone)")
        share = p["s2_panel_mask_fraction"]
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise SpatialImputeInputError("s2_panel_mask_fraction", "a number in [0, 1)", repr(share),
                                          "pass e.g. s2_panel_mask_fraction=0 (the default)")
        return p

    def _mask_fraction(self, value) -> float:
        """``s2_mask_fraction``: a share in (0, 1), or ``"auto"`` = the share of the working
        genes the spatial data lacks, rounded to a tenth and kept within [0.2, 0.9] (0.2 in
        5-fold cross-validation; a panel extended to 5x its size hides 0.8). A stage 2 trained
        to fill 20% gaps and asked to fill 80% does worse: simulated 40-gene panel, 160
        targets, target SPCC 0.174 (0.2) vs 0.206 (0.8), stage 4, fast preset."""
        if isinstance(value, str) and value == "auto":
            p = self.paired
            share = p.n_targets / max(1, p.n_features + p.n_targets)
            return float(min(0.9, max(0.2, round(share, 1))))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise SpatialImputeInputError("s2_mask_fraction", '"auto" or a number in (0, 1)', repr(value),
                                          'pass s2_mask_fraction="auto" or e.g. 0.2')
        return float(value)

    def _epochs(self, stage: str, n_rows: int) -> int:
        """Epochs of a GAN stage: the configured count, raised so that the stage takes at
        least ``min_steps`` mini-batches (small data sets would otherwise see few updates)."""
        cfg = self._cfg
        epochs = int(cfg[f"{stage}_epochs"])
        if epochs == 0 or cfg["min_steps"] <= 0:
            return epochs
        return max(epochs, self._epochs_for_steps(int(cfg["min_steps"]), n_rows))

    def _epochs_for_steps(self, steps: int, n_rows: int) -> int:
        """Fewest epochs over ``n_rows`` rows that make ``steps`` mini-batches."""
        per_epoch = max(1, n_rows // self._cfg["batch_size"])
        return -(-steps // per_epoch)

    def _check_sizes(self) -> None:
        p = self.paired
        if p.n_cells < 3:
            raise SpatialImputeInputError("spatial", "at least 3 spatial cells", f"{p.n_cells}", "STGNET needs a tissue; pass more cells")
        if p.n_reference < 2:
            raise SpatialImputeInputError("reference", "at least 2 reference cells", f"{p.n_reference}", "pass a real reference")
        if p.n_features < 1:
            raise SpatialImputeInputError("genes", "at least one panel gene left as model input", "none", "hold out fewer genes")

    # ------------------------------------------------------------------ data preparation
    def _prepare(self, labels: bool = True) -> None:
        """Scale both datasets, lay out genes, and (``labels=True``) settle labels."""
        p = self.paired
        genes = list(p.feature_genes) + list(p.target_genes)
        order = np.argsort(np.asarray(genes, dtype=object), kind="stable")  # fold-invariant image layout
        self._genes_sorted = [genes[i] for i in order]
        pos = np.empty(len(genes), dtype=np.int64)
        pos[order] = np.arange(len(genes))
        self._feature_pos = pos[: p.n_features]
        self._target_pos = pos[p.n_features :]
        g = len(genes)
        self._n_genes = g
        self._side = S.image_side(g)
        self._s2_targets = None
        if self._cfg["input_scale"] == "gene_max":
            gene_max = p.reference_X.max(axis=0).astype(np.float64)[order]
            self._gene_max = np.where(gene_max > 0, gene_max, 1.0)
            self._ref = np.ascontiguousarray(p.reference_X[:, order] / self._gene_max).astype(np.float32)
            sp_scaled = p.spatial_X / self._gene_max[self._feature_pos]
            self._cell_max = None
        else:
            ref_scaled, _ = stgnet_scale(p.reference_counts, p.reference_library_size)
            self._ref = np.ascontiguousarray(ref_scaled[:, order])
            sp_scaled, self._cell_max = stgnet_scale(p.spatial_counts, p.spatial_library_size)
        spatial_full = np.zeros((p.n_cells, g), dtype=np.float32)
        spatial_full[:, self._feature_pos] = self._align(sp_scaled, self._feature_pos)
        self._spatial = spatial_full
        if self._cfg["network_input"] == "standardized":
            self._ref_in = standardize_genes(p.reference_X[:, order])
            self._spatial_in = np.zeros((p.n_cells, g), dtype=np.float32)
            self._spatial_in[:, self._feature_pos] = standardize_genes(p.spatial_X)
        else:
            self._ref_in = self._spatial_in = None
        self._median_lib = float(np.median(np.where(p.spatial_library_size > 0, p.spatial_library_size, 1.0)))
        coords = np.asarray(p.coords, dtype=np.float64)
        span = coords.max(axis=0) - coords.min(axis=0)
        self._coords01 = ((coords - coords.min(axis=0)) / np.where(span > 0, span, 1.0)).astype(np.float32)
        if labels:
            self._set_labels()

    def _align(self, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Spatial values of the genes at image ``positions`` on the reference's scale
        (``spatial_alignment="quantile"``) or unchanged (``"none"``)."""
        if self._cfg["spatial_alignment"] == "none":
            return values
        return match_quantiles(values, self._ref[:, positions])

    def _set_labels(self) -> None:
        p = self.paired
        cfg = self._cfg
        if p.reference_labels is not None:
            cats, ref_codes, sp_codes = shared_label_codes(
                p.reference_labels, None if p.spatial_labels is None else np.asarray(p.spatial_labels)
            )
            if sp_codes is not None and (sp_codes >= len(p.reference_labels.categories)).any():
                warnings.warn("STGNET: some spatial labels are absent from the reference; their cells are "
                              "conditioned on labels no reference cell has", stacklevel=3)
            source = "given"
        elif cfg["unlabelled"] == "single":
            cats, ref_codes = ["all"], np.zeros(p.n_reference, dtype=np.int64)
            sp_codes = np.zeros(p.n_cells, dtype=np.int64)
            source = "single class (no labels given)"
        else:
            from ..data.clustering import leiden

            ref_codes = leiden(p.reference_X, resolution=cfg["leiden_resolution"], seed=self.seed)
            cats = [str(i) for i in range(int(ref_codes.max()) + 1)]
            sp_codes = None
            source = "leiden"
        if sp_codes is None:
            sp_codes = transfer_labels(p.spatial_X, p.reference_features, ref_codes, method=cfg["label_transfer"],
                                       k=cfg["label_transfer_k"], standardize_genes=cfg["label_transfer_standardize"])
            sp_source = f"transferred ({cfg['label_transfer']}, panel genes only)"
        else:
            sp_source = "given"
        self._label_categories = list(cats)
        self._ref_codes = np.asarray(ref_codes, dtype=np.int64)
        self._sp_codes = np.asarray(sp_codes, dtype=np.int64)
        self._label_source = {"reference": source, "spatial": sp_source, "n_labels": len(cats)}

    def _onehot(self, codes: np.ndarray) -> torch.Tensor:
        c = torch.as_tensor(codes, device=self.device)
        return torch.nn.functional.one_hot(c, len(self._label_categories)).float()

    def _gen(self, stage: str) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, stage))
        return gen

    # ------------------------------------------------------------------ networks
    def _build_g1(self):
        cfg = self._cfg
        torch.manual_seed(derive_seed(self.seed, "init_g1"))
        return ConvDataGenerator(self._side, len(self._label_categories), cfg["latent_dim"], cfg["g1_channels"],
                                 quirk_bn_eps=cfg["g1_bn_eps_quirk"]).to(self.device)

    def _build_critic(self, stage: str, n_coords: int = 0):
        torch.manual_seed(derive_seed(self.seed, f"init_{stage}"))
        return ConvCritic(self._side, len(self._label_categories), self._cfg["critic_map"], n_coords).to(self.device)

    def _build_unet(self, stage: str, n_coords: int = 0):
        cfg = self._cfg
        torch.manual_seed(derive_seed(self.seed, f"init_{stage}"))
        return UNetImputer(self._side, len(self._label_categories), cfg["unet_map"], cfg["unet_ngf"],
                           cfg["unet_levels"], n_coords, mask_input=cfg["unet_mask_input"]).to(self.device)

    def _build_teachers(self) -> ImputerEnsemble:
        """``n_teachers`` reference imputers (member 0 is initialised as a lone ``G2`` would be)."""
        return ImputerEnsemble([self._build_unet("g2" + ("" if i == 0 else f"_{i}")) for i in range(self._cfg["n_teachers"])])

    def _build_s5(self):
        h1, h2 = self._cfg["s5_hidden"]
        torch.manual_seed(derive_seed(self.seed, "init_s5"))
        return MultiViewGCN(self._n_genes, h1, h2).to(self.device)

    # ------------------------------------------------------------------ stages 1-2
    def _reference_key(self) -> str:
        cfg = self._cfg
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self._ref).tobytes())
        h.update(self._ref_codes.tobytes())
        h.update(json.dumps(self._genes_sorted).encode())
        keys = ("g1_channels", "g1_bn_eps_quirk", "critic_map", "unet_map", "unet_ngf", "unet_levels", "s1_epochs", "min_steps",
                "s2_epochs", "batch_size", "n_critic", "s1_lr", "s2_lr", "latent_dim", "gp_weight", "adv_weight", "adversarial", "s2_masks", "s2_mask_fraction",
                "unet_mask_input", "network_input", "n_teachers", "s2_target_neighbors")
        h.update(json.dumps({k: cfg[k] for k in keys}, default=str).encode())
        h.update(f"{self.seed}|{self.device}|{len(self._label_categories)}".encode())
        return h.hexdigest()

    def _smoothed_reference_images(self) -> torch.Tensor | None:
        """Stage-2 targets with ``s2_target_neighbors = k > 1``: each reference cell's mean
        over its ``k`` nearest reference cells (itself included; cosine in 30 principal
        components of all its genes z-scored), as images; ``None`` (the cell itself) otherwise.

        A single scRNA-seq profile is a noisy sample of its cell state; regressed onto it, a
        masked-gene imputer fits that noise. The reference is fully measured, so its own
        neighbourhoods are a fair denoiser (no spatial data, no held-out spatial gene)."""
        k = int(self._cfg["s2_target_neighbors"])
        if k <= 1:
            return None
        if self._s2_targets is not None:  # computed once per fit (stage 2 and the panel fine-tuning)
            return self._s2_targets
        from sklearn.decomposition import PCA

        z = standardize_genes(self.paired.reference_X)
        n_components = min(30, z.shape[0] - 1, z.shape[1])
        emb = z
        if n_components < z.shape[1]:
            emb = PCA(n_components=n_components, random_state=derive_seed(self.seed, "s2_targets")).fit_transform(z)
        idx, _ = knn_cosine(emb, emb, k, device=self.device)
        weights = torch.full(idx.shape, 1.0 / idx.shape[1], device=self.device)
        smoothed = weighted_neighbor_mean(idx, weights, torch.as_tensor(self._ref, device=self.device))
        self._s2_targets = S.to_images(smoothed, self._side)
        return self._s2_targets

    def _reference_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The reference as images, the images the networks read (None: the images), labels."""
        images = S.to_images(torch.as_tensor(self._ref, device=self.device), self._side)
        inputs = None if self._ref_in is None else S.to_images(torch.as_tensor(self._ref_in, device=self.device), self._side)
        return images, inputs, self._onehot(self._ref_codes)

    def _train_reference_stages(self) -> None:
        cfg = self._cfg
        key = self._reference_key()
        self.G1 = self._build_g1()
        self.G2 = self._build_teachers()
        cached = _REFERENCE_CACHE.get(key) if cfg["cache_reference_stages"] else None
        if cached is not None:
            _REFERENCE_CACHE.move_to_end(key)
            self.G1.load_state_dict(cached["g1"])
            self.G2.load_state_dict(cached["g2"])
            for k, v in cached["history"].items():
                self.history[k] = list(v)
            self._reference_stages_cached = True
            return
        images, inputs, onehot = self._reference_tensors()
        common = dict(batch_size=cfg["batch_size"], n_critic=cfg["n_critic"], gp_weight=cfg["gp_weight"],
                      adv_weight=cfg["adv_weight"], progress=progress)
        hist = {}
        if cfg["s2_masks"] == "zeros":  # only this stage 2 draws its targets from G1
            D1 = self._build_critic("d1") if cfg["adversarial"] else None
            h1 = S.train_stage1(self.G1, D1, images, onehot, epochs=self._epochs("s1", images.shape[0]), lr=cfg["s1_lr"],
                                generator=self._gen("s1"), **common)
            hist["s1_generator"] = h1["generator"]
            if "critic" in h1:
                hist["s1_critic"] = h1["critic"]
        targets = self._smoothed_reference_images() if cfg["s2_masks"] == "genes" else None
        runs = []
        for i, member in enumerate(self.G2.members):
            suffix = "" if i == 0 else f"_{i}"
            critic = self._build_critic(f"d2{suffix}") if cfg["adversarial"] else None
            runs.append(S.train_stage2(member, critic, self.G1, images, onehot, epochs=self._epochs("s2", images.shape[0]),
                                       lr=cfg["s2_lr"], masks=cfg["s2_masks"], n_genes=self._n_genes,
                                       mask_fraction=cfg["s2_mask_fraction"], inputs=inputs,
                                       targets=targets, generator=self._gen(f"s2{suffix}"), **common))
        for key_ in runs[0]:  # per-epoch mean over the members
            hist[f"s2_{key_}"] = [float(v) for v in np.mean([r[key_] for r in runs], axis=0)]
        self.history.update({k: list(v) for k, v in hist.items()})
        self._reference_stages_cached = False
        if cfg["cache_reference_stages"]:
            _REFERENCE_CACHE[key] = {
                "g1": {k: v.detach().cpu().clone() for k, v in self.G1.state_dict().items()},
                "g2": {k: v.detach().cpu().clone() for k, v in self.G2.state_dict().items()},
                "history": hist,
            }
            while len(_REFERENCE_CACHE) > _REFERENCE_CACHE_SIZE:
                _REFERENCE_CACHE.popitem(last=False)

    def _adapt_teachers_to_panel(self) -> None:
        """Fine-tune each teacher for ``s2_panel_steps`` mini-batches on the reference with
        the spatial panel as its mask (``s2_masks="genes"`` only): stages 1-2 are shared
        across cross-validation folds and learn random gaps; this step fits the teacher to
        the gap it will fill, the target genes given the panel (with
        ``s2_panel_mask_fraction > 0`` each panel gene is also hidden with that probability).
        The teachers as stages 1-2 left them are kept as ``G2_general``: the reliability
        model's held-out panel genes are other gaps, which they were trained for."""
        cfg = self._cfg
        steps = int(cfg["s2_panel_steps"])
        self.G2_general = None
        if steps == 0 or cfg["s2_masks"] != "genes":
            return
        self.G2_general = copy.deepcopy(self.G2)
        images, inputs, onehot = self._reference_tensors()
        observed = self._gene_mask_image(self._feature_pos)
        targets = self._smoothed_reference_images()
        runs = []
        for i, member in enumerate(self.G2.members):
            runs.append(S.train_stage2(member, None, self.G1, images, onehot, epochs=self._epochs_for_steps(steps, images.shape[0]),
                                       batch_size=cfg["batch_size"], lr=cfg["s2_lr"], masks="genes", n_genes=self._n_genes,
                                       mask_fraction=cfg["s2_panel_mask_fraction"], inputs=inputs, targets=targets,
                                       observed=observed,
                                       generator=self._gen(f"s2_panel_{i}"), progress=progress))
        self.history["s2_panel_imputer"] = [float(v) for v in np.mean([r["imputer"] for r in runs], axis=0)]

    # ------------------------------------------------------------------ stages 3-5
    def _spatial_tensors(self, observed_pos: np.ndarray, cells: np.ndarray | None = None):
        """Images with only ``observed_pos`` genes kept, the network's input images (None
        when the network reads the images themselves), the gene mask, labels, coordinates."""
        images, inputs = (self._observed_images(v, observed_pos, cells) for v in (self._spatial, self._spatial_in))
        gm = self._gene_mask_image(observed_pos)
        codes = self._sp_codes if cells is None else self._sp_codes[cells]
        coords = self._coords01 if cells is None else self._coords01[cells]
        return images, inputs, gm, self._onehot(codes), torch.as_tensor(coords, device=self.device)

    def _gene_mask_image(self, positions: np.ndarray) -> torch.Tensor:
        """One image, 1 at the genes at ``positions`` (observed), 0 elsewhere."""
        mask = np.zeros(self._n_genes, dtype=np.float32)
        mask[positions] = 1.0
        return S.to_images(torch.as_tensor(mask[None], device=self.device), self._side)

    def _observed_images(self, values: np.ndarray | None, observed_pos: np.ndarray, cells: np.ndarray | None):
        if values is None:
            return None
        v = values if cells is None else values[cells]
        x = np.zeros_like(v)
        x[:, observed_pos] = v[:, observed_pos]
        return S.to_images(torch.as_tensor(x, device=self.device), self._side)

    def _train_g3(self, images, inputs, gm, onehot, coords, tag: str):
        cfg = self._cfg
        G3 = self._build_unet(f"g3{tag}", n_coords=coords.shape[1])
        if cfg["s3_init"] == "teacher":
            G3.init_from_teacher(self.G2.members[0])
        D3 = self._build_critic(f"d3{tag}", n_coords=coords.shape[1]) if cfg["s3_critic"] and cfg["adversarial"] else None
        hist = S.train_stage3(G3, self.G2, images, gm, onehot, coords, epochs=self._epochs("s3", images.shape[0]),
                              batch_size=cfg["batch_size"], update_every=cfg["s3_update_every"], lr=cfg["s3_lr"],
                              D3=D3, gp_weight=cfg["gp_weight"], adv_weight=cfg["adv_weight"], inputs=inputs,
                              ema_decay=cfg["s3_ema_decay"], generator=self._gen(f"s3{tag}"), progress=progress)
        return G3, hist

    def _stage4(self, net, images, inputs, gm, onehot, coords, tag: str) -> torch.Tensor:
        """Stage-4 images from the student ``G3`` or a teacher ensemble (which ignores ``coords``)."""
        cfg = self._cfg
        out = S.infer_stage4(net, images, gm, onehot, coords, noise=cfg["inference_noise"], bn_mode=cfg["bn_inference"],
                             batch_size=cfg["batch_size"], inputs=inputs, generator=self._gen(f"s4{tag}"))
        return S.from_images(out, self._n_genes)

    def _stage4_output(self, student, teacher, images, inputs, gm, onehot, coords, tag: str) -> torch.Tensor:
        """Stage-4 images: the ``student``'s, blended with the ``teacher`` ensemble's by
        ``s4_teacher_weight`` (see Notes)."""
        out = self._stage4(student, images, inputs, gm, onehot, coords, tag)
        weight = float(self._cfg["s4_teacher_weight"])
        if weight == 0.0:
            return out
        return torch.lerp(out, self._stage4(teacher, images, inputs, gm, onehot, coords, f"{tag}_teacher"), weight)

    def _graphs(self, features: torch.Tensor, cells: np.ndarray | None = None):
        cfg = self._cfg
        coords = self.paired.coords if cells is None else self.paired.coords[cells]
        sample_ids = self.paired.sample_ids if cells is None else self.paired.sample_ids[cells]
        radius = radius_for_mean_degree(coords, min(cfg["spatial_degree"], coords.shape[0] - 1.5), sample_ids)
        g_sp = radius_graph(coords, radius, sample_ids)
        k = int(min(cfg["feature_k"], features.shape[0] - 1))
        g_ft = feature_knn_graph(features.detach().cpu().numpy(), k, device=self.device)
        adj_s = row_normalized_propagation(g_sp, device=self.device)
        adj_f = row_normalized_propagation(g_ft, device=self.device)
        coo = g_sp.tocoo()
        edges = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64), device=self.device)
        info = {"radius": float(radius), "spatial_mean_degree": float(g_sp.nnz / g_sp.shape[0]),
                "feature_mean_degree": float(g_ft.nnz / g_ft.shape[0])}
        return adj_s, adj_f, edges, info

    def _sr_mode(self, n: int) -> str:
        mode = self._cfg["sr_mode"]
        if mode == "auto":
            return "exact" if n <= self._cfg["sr_exact_max_cells"] else "sampled"
        return mode

    def _stage5(self, features: torch.Tensor, observed_pos: np.ndarray, tag: str, cells: np.ndarray | None = None,
                model: MultiViewGCN | None = None, train: bool = True):
        cfg = self._cfg
        adj_s, adj_f, edges, info = self._graphs(features, cells)
        model = model if model is not None else self._build_s5()
        observed = torch.as_tensor(observed_pos, device=self.device)
        if train:
            mu, hist = S.train_stage5(
                model, features, adj_s, adj_f, edges, observed, epochs=cfg["s5_epochs"], lr=cfg["s5_lr"],
                weight_decay=cfg["s5_weight_decay"], zinb_weight=cfg["zinb_weight"], sr_weight=cfg["sr_weight"],
                kl_weight=cfg["kl_weight"], sr_mode=self._sr_mode(features.shape[0]), sr_negatives=cfg["sr_negatives"],
                generator=self._gen(f"s5{tag}"), progress=progress,
            )
        else:
            model.train()  # full-batch BatchNorm statistics, as during training
            with torch.no_grad():
                mu = model(features, adj_s, adj_f)["mu"]
            hist = {}
        return model, mu, hist, info

    # ------------------------------------------------------------------ BaseImputer API
    def _fit(self) -> None:
        self._cfg = self._config()
        self._check_sizes()
        self._prepare()
        self._train_reference_stages()
        self._adapt_teachers_to_panel()
        self._s2_targets = None  # only stages 1-2 and the fine-tuning need them
        images, inputs, gm, onehot, coords = self._spatial_tensors(self._feature_pos)
        self.G3, h3 = self._train_g3(images, inputs, gm, onehot, coords, "")
        self.history["s3_student"] = h3["student"]
        if "critic" in h3:
            self.history["s3_critic"] = h3["critic"]
        self._s4 = self._stage4_output(self.G3, self.G2, images, inputs, gm, onehot, coords, "")
        self.S5 = None
        self._graph_info = {}
        refine = self._cfg["refine"]
        self._refine_check = self._check_refinement() if refine == "auto" else None
        if self._refine_check is not None:
            refine = self._refine_check["refine"]
        if refine:
            self.S5, mu, h5, self._graph_info = self._stage5(self._s4, self._feature_pos, "")
            self.history.update({f"s5_{k}": v for k, v in h5.items()})
            self._mu = mu
        else:
            self._mu = self._s4

    def _unscale(self, v: np.ndarray, positions: np.ndarray, cell_max: np.ndarray | None) -> np.ndarray:
        """Model scale -> log-normalised scale for the genes at image ``positions``.

        ``input_scale="gene_max"``: times each gene's reference maximum. ``"cell_max"``:
        ``output_scale`` picks the per-cell maximum, or the median cell maximum of the data
        set, which keeps each gene's cell ranking (see the module docstring)."""
        if self._cfg["input_scale"] == "gene_max":
            return (np.clip(v, 0.0, None) * self._gene_max[positions]).astype(np.float32)
        if self._cfg["output_scale"] == "median_max":
            cell_max = np.full(v.shape[0], float(np.median(self._cell_max)))
        return stgnet_unscale(v, cell_max, self._median_lib)

    def _final_targets(self, mu: torch.Tensor, target_pos: np.ndarray) -> np.ndarray:
        return self._genes_at(mu, target_pos, self._cell_max)

    def _predict(self) -> np.ndarray:
        if getattr(self, "_mu", None) is None:
            images, inputs, gm, onehot, coords = self._spatial_tensors(self._feature_pos)
            self._s4 = self._stage4_output(self.G3, self.G2, images, inputs, gm, onehot, coords, "")
            if self.S5 is not None:
                _, self._mu, _, self._graph_info = self._stage5(self._s4, self._feature_pos, "", model=self.S5, train=False)
            else:
                self._mu = self._s4
        return self._final_targets(self._mu, self._target_pos)

    def _heldout_stage4(self, train_cols: np.ndarray, cells: np.ndarray, tag: str, retrain_student: bool = False):
        """Stage-4 images of ``cells`` with only the ``train_cols`` panel genes observed,
        imputed by the teacher ``G2`` (``retrain_student``: by a ``G3`` trained for this
        mask, blended with the teacher as in stage 4); also returns the per-cell scale
        (``cell_max`` inputs)."""
        observed = self._feature_pos[train_cols]
        images, inputs, gm, onehot, coords = self._spatial_tensors(observed, cells)
        cell_max = None
        if self._cfg["input_scale"] == "cell_max":  # the per-cell scale must not use the held-out genes
            p = self.paired
            sp_scaled, cell_max = stgnet_scale(p.spatial_counts[np.ix_(cells, train_cols)], p.spatial_library_size[cells])
            x = np.zeros((cells.size, self._n_genes), dtype=np.float32)
            x[:, observed] = self._align(sp_scaled, observed)
            images = S.to_images(torch.as_tensor(x, device=self.device), self._side)
        teacher = self.G2 if self.G2_general is None else self.G2_general
        if retrain_student:
            student = self._train_g3(images, inputs, gm, onehot, coords, tag)[0]
            return self._stage4_output(student, teacher, images, inputs, gm, onehot, coords, tag), cell_max
        return self._stage4(teacher, images, inputs, gm, onehot, coords, tag), cell_max

    def _heldout_genes(self, values: torch.Tensor, heldout_cols: np.ndarray, cell_max: np.ndarray | None) -> np.ndarray:
        return self._genes_at(values, self._feature_pos[heldout_cols], cell_max)

    def _genes_at(self, values: torch.Tensor, positions: np.ndarray, cell_max: np.ndarray | None) -> np.ndarray:
        """The genes at image ``positions`` of stage-4/5 ``values``, log-normalised."""
        v = values[:, torch.as_tensor(positions, device=values.device)].detach().cpu().numpy()
        return self._unscale(v, positions, cell_max)

    def _predict_heldout(self, train_cols: np.ndarray, heldout_cols: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Predict held-out feature genes from the other feature genes (for reliability)."""
        tag = f"_rel{int(heldout_cols[0])}"
        values, cell_max = self._heldout_stage4(train_cols, cells, tag, self._cfg["reliability_heldout"] == "full")
        if self.S5 is not None and self._cfg["reliability_heldout"] != "teacher":
            _, values, _, _ = self._stage5(values, self._feature_pos[train_cols], tag, cells)
        return self._heldout_genes(values, heldout_cols, cell_max)

    def _check_refinement(self) -> dict:
        """``refine="auto"``: does stage 5 raise accuracy on this data set?

        A fifth of the panel genes is hidden, imputed from the rest by the teacher on at most
        ``refine_check_cells`` cells, and scored (mean SPCC against the measured values)
        before and after a stage-5 refinement. Stage 5 runs on the real data only if it
        helped; the targets are never looked at.
        """
        from ..benchmark.metrics import gene_metrics

        p = self.paired
        if p.n_features < 3:
            return {"refine": True, "reason": "fewer than 3 panel genes: not checked"}
        rng = np.random.default_rng(derive_seed(self.seed, "refine_check"))
        heldout = np.sort(rng.choice(p.n_features, max(1, p.n_features // 5), replace=False))
        train = np.setdiff1d(np.arange(p.n_features), heldout)
        n_cells = int(self._cfg["refine_check_cells"])
        cells = np.arange(p.n_cells) if p.n_cells <= n_cells else np.sort(rng.choice(p.n_cells, n_cells, replace=False))
        s4, cell_max = self._heldout_stage4(train, cells, "_refine_check")
        _, mu, _, _ = self._stage5(s4, self._feature_pos[train], "_refine_check", cells)
        truth = p.spatial_X[np.ix_(cells, heldout)]
        before, after = (float(np.nanmean(gene_metrics(truth, self._heldout_genes(v, heldout, cell_max))["spcc"]))
                         for v in (s4, mu))
        return {"refine": bool(after > before), "heldout_panel_genes": int(heldout.size), "cells": int(cells.size),
                "spcc_stage4": round(before, 4), "spcc_refined": round(after, 4)}

    def _reliability(self, prediction: np.ndarray) -> np.ndarray:
        if not self.params["reliability"]:
            return np.full(prediction.shape[1], np.nan)
        from ..reliability import reliability_from_heldout

        described = prediction if self._cfg["reliability_heldout"] == "full" else self._reliability_targets
        with torch.enable_grad():
            return reliability_from_heldout(self.paired, self._predict_heldout, described, seed=self.seed)

    def _reliability_targets(self, cells: np.ndarray) -> np.ndarray:
        """The target genes of ``cells`` as the held-out panel genes are predicted for the
        reliability model (the teacher; plus stage 5 with ``"teacher_refined"``): the model
        maps that predictor's gene descriptors to accuracy, so the targets are described
        through it too (see Notes)."""
        values, cell_max = self._heldout_stage4(np.arange(self.paired.n_features), cells, "_rel_targets")
        if self.S5 is not None and self._cfg["reliability_heldout"] == "teacher_refined":
            _, values, _, _ = self._stage5(values, self._feature_pos, "_rel_targets", cells)
        return self._genes_at(values, self._target_pos, cell_max)

    def provenance(self) -> dict:
        prov = super().provenance()
        prov["stgnet"] = {
            "resolved_params": {k: v for k, v in getattr(self, "_cfg", {}).items()},
            "labels": getattr(self, "_label_source", None),
            "graphs": getattr(self, "_graph_info", None),
            "reference_stages_from_cache": getattr(self, "_reference_stages_cached", None),
            "refine_check": getattr(self, "_refine_check", None),
            "refined": getattr(self, "S5", None) is not None,
        }
        return prov

    # ------------------------------------------------------------------ save / load
    def _state_dict(self) -> dict:
        state: dict = {}
        for name in _NETWORKS:
            net = getattr(self, name, None)
            if net is not None:
                for k, v in net.state_dict().items():
                    state[f"{name}.{k}"] = v
        state["spatial_label_codes"] = torch.as_tensor(self._sp_codes)
        state["reference_label_codes"] = torch.as_tensor(self._ref_codes)
        state["label_categories"] = list(self._label_categories)
        return state

    def _load_state_dict(self, state: dict) -> None:
        self._cfg = self._config()
        self._check_sizes()
        p = self.paired
        self._label_categories = list(state["label_categories"])
        # rebuild scales and layout without re-clustering: labels come from the saved state
        self._ref_codes = state["reference_label_codes"].cpu().numpy().astype(np.int64)
        self._sp_codes = state["spatial_label_codes"].cpu().numpy().astype(np.int64)
        if self._sp_codes.shape[0] != p.n_cells:
            raise SpatialImputeInputError("spatial", f"the {self._sp_codes.shape[0]} cells the model was trained on",
                                          f"{p.n_cells} cells", "pass the spatial data the model was trained with")
        self._prepare(labels=False)
        self._label_source = {"reference": "saved", "spatial": "saved", "n_labels": len(self._label_categories)}
        self.G1 = self._build_g1()
        self.G2 = self._build_teachers()
        self.G3 = self._build_unet("g3", n_coords=self._coords01.shape[1])
        self.S5 = self._build_s5() if any(k.startswith("S5.") for k in state) else None
        self.G2_general = self._build_teachers() if any(k.startswith("G2_general.") for k in state) else None
        for name in _NETWORKS:
            net = getattr(self, name)
            if net is None:
                continue
            sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            net.load_state_dict(sub)
        self._mu = None
        self._reference_stages_cached = None
