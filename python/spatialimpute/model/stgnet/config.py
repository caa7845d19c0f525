"""STGNET's options: what the model is (:class:`STGNETArchitecture`), how it is trained
(:class:`STGNETSchedule`), and the presets (:data:`PRESETS`).

The dataclass defaults are the ``"fast"`` preset; ``"paper"`` lists the values of the
original method that differ (docs/algorithms/stgnet.md, "The paper preset"). Why the fast
preset differs, with the measurements, is in docs/notes/stgnet.md.
"""

from __future__ import annotations

import dataclasses

from ..._validation import SpatialImputeInputError
from .._config import Config, boolean, choice, integer, integer_list, number

__all__ = ["PRESETS", "STGNETArchitecture", "STGNETSchedule"]


@dataclasses.dataclass(frozen=True)
class STGNETArchitecture(Config):
    """What an STGNET model is.

    Networks: ``g1_channels`` (stage-1 generator trunk), ``g1_bn_eps_quirk`` (the original's
    BatchNorm eps of 0.8 in ``G1``), ``latent_dim`` (``G1``'s noise), ``critic_map`` (side of
    the critics' map), ``unet_map`` / ``unet_ngf`` / ``unet_levels`` (the U-Net imputers'
    map side, width and depth), ``unet_stem`` (channels of their first convolution, on the
    full map: most of their compute), ``unet_mask_input`` (the U-Nets also read the mask),
    ``n_teachers`` (stage-2 imputers averaged into the teacher), ``s5_hidden`` (stage-5
    GCN widths).

    Inputs: ``input_scale`` (``"gene_max"``: log-normalised values over each gene's
    reference maximum; ``"cell_max"``: the original's CP10k, log1p, over each cell's
    maximum), ``network_input`` (``"standardized"``: the U-Nets read per-gene z-scores;
    ``"scaled"``: the scaled images), ``spatial_alignment`` (``"quantile"``: spatial genes
    mapped onto the reference's per-gene distributions; ``"none"``).

    Labels: ``unlabelled`` (without reference labels: ``"single"`` class or ``"leiden"``
    clusters of the reference), ``leiden_resolution``, ``label_transfer`` (spatial labels
    from the reference on panel genes: ``"knn"`` vote of ``label_transfer_k`` most
    correlated reference cells, or the single best ``"pearson"`` match),
    ``label_transfer_standardize`` (z-score each panel gene within each data set first).

    Prediction: ``s4_teacher_weight`` (stage 4 = ``(1 - w)`` student + ``w`` teacher),
    ``inference_noise`` (``"uniform"`` as in training, or ``"normal"``), ``bn_inference``
    (``"running_stats"``, or ``"batch_stats"`` of consecutive batches), ``refine`` (run
    stage 5), ``spatial_degree`` (mean degree of its radius graph), ``feature_k`` (its
    expression kNN graph), ``reliability`` (per-gene reliability scores; NaN otherwise),
    ``reliability_cells`` (the spatial cells they are estimated on: a random sample of at
    most this many; ``None``: up to 20,000).
    """

    g1_channels: tuple = integer_list((32, 16))
    g1_bn_eps_quirk: bool = boolean(True)
    latent_dim: int = integer(128, minimum=1)
    critic_map: int = integer(8, minimum=4)
    unet_map: int = integer(16, minimum=4)
    unet_ngf: int = integer(8, minimum=1)
    unet_levels: int = integer(3, minimum=1)
    unet_stem: int = integer(8, minimum=1)
    unet_mask_input: bool = boolean(True)
    n_teachers: int = integer(3, minimum=1)
    input_scale: str = choice("gene_max", ("gene_max", "cell_max"))
    network_input: str = choice("standardized", ("standardized", "scaled"))
    spatial_alignment: str = choice("quantile", ("quantile", "none"))
    unlabelled: str = choice("single", ("single", "leiden"))
    leiden_resolution: float = number(2.0, minimum=0.0, inclusive=False)
    label_transfer: str = choice("knn", ("knn", "pearson"))
    label_transfer_k: int = integer(15, minimum=1)
    label_transfer_standardize: bool = boolean(True)
    s4_teacher_weight: float = number(0.5, minimum=0.0, maximum=1.0)
    inference_noise: str = choice("uniform", ("uniform", "normal"))
    bn_inference: str = choice("running_stats", ("running_stats", "batch_stats"))
    refine: bool = boolean(False)
    spatial_degree: float = number(4.0, minimum=0.0, inclusive=False)
    feature_k: int = integer(5, minimum=1)
    s5_hidden: tuple = integer_list((128, 64))
    reliability: bool = boolean(True)
    reliability_cells: int | None = integer(3000, minimum=10, optional=True)

    def _check_together(self) -> None:
        if len(self.s5_hidden) != 2:
            raise SpatialImputeInputError("s5_hidden", "two widths (GCN hidden, embedding)", repr(list(self.s5_hidden)),
                                          "pass e.g. s5_hidden=[128, 64]")


@dataclasses.dataclass(frozen=True)
class STGNETSchedule(Config):
    """How an STGNET model is trained.

    Length of the GAN stages: each runs ``sN_steps`` mini-batches of ``batch_size`` cells
    (a fixed budget, whatever the number of cells), or, with ``sN_steps=None``,
    ``sN_epochs`` passes over its cells (the original); exactly one of the two is set.
    ``image_budget``: with step budgets, images of more pixels than this (panels of more
    genes) get proportionally fewer steps, so that a stage's work stays bounded as the panel
    grows (``None``: no scaling). ``reference_cells``: stages 1-2 train on a random sample
    of at most this many reference cells (``None``: all of them). ``spatial_cells``: stage 3
    trains on, and the quantile alignment is fitted on, a random sample of at most this
    many spatial cells (``None``: all of them); every cell is imputed. ``s2_panel_steps``:
    mini-batches of the teachers' fine-tuning with the spatial panel as their mask (0: none).

    Optimisation: ``s1_lr`` / ``s2_lr`` / ``s3_lr`` (Adam), ``adversarial`` (train the
    critics and add ``adv_weight`` times their term; stage 3's critic sends no gradient to
    its generator), ``n_critic`` (critic updates per generator update),
    ``s3_update_every`` (batches per student update), ``gp_weight`` (gradient penalty).

    Stage-2 task: ``s2_masks`` (``"genes"``: hide each gene with probability
    ``s2_mask_fraction`` and reconstruct the cell; ``"zeros"``: the original's masks
    ``x > 0`` and class samples of ``G1`` as targets), ``s2_mask_fraction`` (``None``: the
    share of genes the spatial data lacks, within [0.2, 0.9]), ``s2_target_neighbors``
    (regress onto each reference cell's mean over this many nearest reference cells).

    Stage 3: ``s3_targets`` (what the student regresses onto where genes are hidden, at
    every update with fresh noise: ``"teacher_sampled"``, a pass of the whole teacher
    ensemble; ``"teacher_member"``, of one of its members drawn at random), ``s3_init`` (``"teacher"``: the student starts as a copy of teacher member 0;
    ``"random"``), ``s3_ema_decay`` (the student is the moving average of its iterates;
    0 = the last iterate).

    Stage 5: ``s5_epochs`` full-batch steps, ``s5_lr``, ``s5_weight_decay``, loss weights
    ``zinb_weight`` / ``sr_weight`` / ``kl_weight``, ``sr_mode`` (the spatial regulariser:
    ``"exact"`` in blocks, ``"sampled"`` negatives, or ``"auto"``: exact up to
    ``sr_exact_max_cells`` cells), ``sr_negatives``.

    ``cache_reference_stages``: reuse stages 1-2 trained on the same reference with the same
    configuration and seed in this process (as cross-validation folds do).
    """

    batch_size: int = integer(100, minimum=1)
    s1_steps: int | None = integer(450, minimum=0, optional=True)
    s2_steps: int | None = integer(720, minimum=0, optional=True)
    s3_steps: int | None = integer(400, minimum=0, optional=True)
    s1_epochs: int | None = integer(None, minimum=0, optional=True)
    s2_epochs: int | None = integer(None, minimum=0, optional=True)
    s3_epochs: int | None = integer(None, minimum=0, optional=True)
    reference_cells: int | None = integer(10_000, minimum=2, optional=True)
    spatial_cells: int | None = integer(20_000, minimum=3, optional=True)
    image_budget: int | None = integer(256, minimum=1, optional=True)
    s2_panel_steps: int = integer(240, minimum=0)
    s1_lr: float = number(1e-3, minimum=0.0, inclusive=False)
    s2_lr: float = number(1e-3, minimum=0.0, inclusive=False)
    s3_lr: float = number(1e-3, minimum=0.0, inclusive=False)
    adversarial: bool = boolean(False)
    n_critic: int = integer(1, minimum=1)
    s3_update_every: int = integer(1, minimum=1)
    gp_weight: float = number(10.0, minimum=0.0)
    adv_weight: float = number(0.1, minimum=0.0)
    s2_masks: str = choice("genes", ("genes", "zeros"))
    s2_mask_fraction: float | None = number(None, minimum=0.0, maximum=1.0, inclusive=False, optional=True)
    s2_target_neighbors: int = integer(15, minimum=1)
    s3_targets: str = choice("teacher_member", ("teacher_member", "teacher_sampled"))
    s3_init: str = choice("teacher", ("teacher", "random"))
    s3_ema_decay: float = number(0.99, minimum=0.0, maximum=1.0)
    s5_epochs: int = integer(101, minimum=0)
    s5_lr: float = number(0.01, minimum=0.0, inclusive=False)
    s5_weight_decay: float = number(1e-4, minimum=0.0)
    zinb_weight: float = number(1.0, minimum=0.0)
    sr_weight: float = number(1.0, minimum=0.0)
    kl_weight: float = number(10.0, minimum=0.0)
    sr_mode: str = choice("auto", ("auto", "exact", "sampled"))
    sr_exact_max_cells: int = integer(20_000, minimum=1)
    sr_negatives: int = integer(64, minimum=1)
    cache_reference_stages: bool = boolean(True)

    def _check_together(self) -> None:
        for stage in ("s1", "s2", "s3"):
            steps, epochs = getattr(self, f"{stage}_steps"), getattr(self, f"{stage}_epochs")
            if (steps is None) == (epochs is None):
                raise SpatialImputeInputError(
                    f"{stage}_steps, {stage}_epochs", "exactly one of the two (a step budget or a number of epochs)",
                    f"{stage}_steps={steps!r}, {stage}_epochs={epochs!r}",
                    f"pass {stage}_steps=N with {stage}_epochs=None, or {stage}_epochs=N with {stage}_steps=None",
                )
        if self.s3_ema_decay >= 1.0:
            raise SpatialImputeInputError("s3_ema_decay", "a number in [0, 1)", repr(self.s3_ema_decay),
                                          "pass e.g. s3_ema_decay=0.99, or 0 for the last iterate")

    def length(self, stage: str, n_rows: int, pixels: int = 1) -> int:
        """Mini-batches of GAN stage ``stage`` (``"s1"``, ``"s2"``, ``"s3"``, ``"s2_panel"``)
        over ``n_rows`` cells whose images have ``pixels`` pixels."""
        steps = getattr(self, f"{stage}_steps")
        if steps is None:
            return int(getattr(self, f"{stage}_epochs")) * batches_per_epoch(n_rows, self.batch_size)
        if self.image_budget is not None and pixels > self.image_budget:
            return -(-int(steps) * self.image_budget // pixels)
        return int(steps)


def batches_per_epoch(n_rows: int, batch_size: int) -> int:
    """Mini-batches of one pass over ``n_rows`` rows (the last partial batch is dropped; one
    batch when there are fewer rows than a batch)."""
    return max(1, n_rows // batch_size)


#: Preset name -> values differing from the dataclass defaults (the first preset is the default).
PRESETS: dict[str, dict] = {
    "fast": {},
    "paper": {
        # networks (docs/algorithms/stgnet.md, "Networks")
        "g1_channels": (512, 256, 128, 64, 32),
        "critic_map": 64,
        "unet_map": 128,
        "unet_ngf": 64,
        "unet_levels": 5,
        "unet_stem": 32,
        "unet_mask_input": False,
        "n_teachers": 1,
        # inputs and labels
        "input_scale": "cell_max",
        "network_input": "scaled",
        "spatial_alignment": "none",
        "unlabelled": "leiden",
        "leiden_resolution": 0.5,
        "label_transfer": "pearson",
        "label_transfer_standardize": False,
        # prediction
        "s4_teacher_weight": 0.0,
        "inference_noise": "normal",
        "bn_inference": "batch_stats",
        "refine": True,
        "reliability_cells": None,
        # schedule: 500 epochs per GAN stage, batches of 100
        "s1_steps": None, "s2_steps": None, "s3_steps": None,
        "s1_epochs": 500, "s2_epochs": 500, "s3_epochs": 500,
        "reference_cells": None,
        "spatial_cells": None,
        "image_budget": None,
        "s2_panel_steps": 0,
        "s1_lr": 1e-4,
        "s2_lr": 1e-5,
        "s3_lr": 1e-5,
        "adversarial": True,
        "n_critic": 5,
        "s3_update_every": 5,
        "s2_masks": "zeros",
        "s2_target_neighbors": 1,
        "s3_targets": "teacher_sampled",
        "s3_init": "random",
        "s3_ema_decay": 0.0,
    },
}
