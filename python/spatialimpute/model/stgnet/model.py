"""The STGNET model class: builds the networks and runs the stages in order
(docs/algorithms/stgnet.md). Options: :mod:`.config`; data preparation: :mod:`.data`;
the cross-fold cache of stages 1-2: :mod:`.cache`; the stages' maths:
:mod:`spatialimpute.module.stgnet`."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..._settings import derive_seed, progress
from ..._validation import SpatialImputeInputError
from ...data.spatial_graph import feature_knn_graph, radius_for_mean_degree, radius_graph, row_normalized_propagation
from ...module import stgnet as S
from ...nn.critics import ConvCritic
from ...nn.gcn import MultiViewGCN
from ...nn.generators import ConvDataGenerator
from ...nn.unet import ImputerEnsemble, UNetImputer
from .._base import BaseImputer
from . import cache
from .config import PRESETS, STGNETArchitecture, STGNETSchedule, batches_per_epoch
from .data import (Labels, align, prepare, reference_sample, row_sample, settle_labels, smoothed_targets, stgnet_scale,
                   unscale)

class _Clock:
    """Records the seconds since the previous call into ``timings[name]``."""

    def __init__(self, timings: dict) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now


#: The networks a trained model saves (``G2_general``: the teachers before the panel fine-tuning).
_NETWORKS = ("G1", "G2", "G2_general", "G3", "S5")


class STGNET(BaseImputer):
    """STGNET imputation: GAN-trained U-Net imputers distilled onto the spatial cells, with an
    optional multi-view GCN refinement.

    Stage 1 trains a label-conditional generator on the reference (only for the original
    stage 2), stage 2 the teacher: U-Net imputers of reference cells with genes hidden;
    the teachers are then fine-tuned with the spatial panel as their mask. Stage 3 trains a
    spatial U-Net (the student, conditioned on labels and coordinates) to reproduce the
    teacher's imputation of the spatial cells (measured genes keep their values; held-out
    and panel-extension genes are hidden), on a sample of at most ``spatial_cells`` cells.
    Stage 4 imputes the spatial cells block by block with the student, blended with the
    teacher, each cell with its own noise; stage 5 (``refine=True``) refines the result
    of every cell at once with two GCNs (spatial radius graph, expression kNN graph),
    attention fusion and a ZINB decoder. The result is mapped back to the log-normalised
    scale.

    Parameters
    ----------
    spatial, reference, genes, seed, device, labels_key, reference_labels_key, ...
        See :class:`~spatialimpute.model._base.BaseImputer`. Given labels are used with one
        shared vocabulary; without reference labels see ``unlabelled``.
    preset
        ``"fast"`` (default) or ``"paper"`` (the original method).
    **options
        See :class:`STGNETArchitecture` and :class:`STGNETSchedule`.

    Notes
    -----
    Reliability scores come from :mod:`spatialimpute.reliability` fitted on STGNET's own
    held-out panel genes predicted by the teacher as stages 1-2 left it; the target genes
    are described through the same teacher, since the reliability model maps descriptors
    of that predictor's output to accuracy.
    """

    method_name = "stgnet"
    Architecture = STGNETArchitecture
    Schedule = STGNETSchedule
    presets = PRESETS
    reads_counts = True

    # ------------------------------------------------------------------ settings
    def _resolve(self) -> None:
        """Write the data-dependent options (``None`` / ``"auto"``) back as resolved values."""
        p, sched = self.paired, self.schedule
        fraction = sched.s2_mask_fraction
        if fraction is None:  # the share of the working genes the spatial data lacks
            share = p.n_targets / max(1, p.n_features + p.n_targets)
            fraction = float(min(0.9, max(0.2, round(share, 1))))
        sr_mode = sched.sr_mode
        if sr_mode == "auto":
            sr_mode = "exact" if p.n_cells <= sched.sr_exact_max_cells else "sampled"
        self.schedule = sched.replace(s2_mask_fraction=fraction, sr_mode=sr_mode)

    def _check_sizes(self) -> None:
        p = self.paired
        if p.n_cells < 3:
            raise SpatialImputeInputError("spatial", "at least 3 spatial cells", f"{p.n_cells}", "STGNET needs a tissue; pass more cells")
        if p.n_reference < 2:
            raise SpatialImputeInputError("reference", "at least 2 reference cells", f"{p.n_reference}", "pass a real reference")
        if p.n_features < 1:
            raise SpatialImputeInputError("genes", "at least one panel gene left as model input", "none", "hold out fewer genes")

    def _gen(self, stage: str) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, stage))
        return gen

    def _images(self, values: np.ndarray) -> torch.Tensor:
        return S.to_images(torch.as_tensor(values, device=self.device), self._data.side)

    def _onehot(self, codes: np.ndarray) -> torch.Tensor:
        c = torch.as_tensor(codes, device=self.device)
        return torch.nn.functional.one_hot(c, len(self._labels.categories)).float()

    # ------------------------------------------------------------------ networks
    def _seeded(self, name: str, build):
        torch.manual_seed(derive_seed(self.seed, f"init_{name}"))
        return build().to(self.device)

    def _build_g1(self) -> ConvDataGenerator:
        a = self.architecture
        return self._seeded("g1", lambda: ConvDataGenerator(self._data.side, len(self._labels.categories), a.latent_dim,
                                                            list(a.g1_channels), quirk_bn_eps=a.g1_bn_eps_quirk))

    def _build_critic(self, name: str, n_coords: int = 0) -> ConvCritic:
        return self._seeded(name, lambda: ConvCritic(self._data.side, len(self._labels.categories),
                                                     self.architecture.critic_map, n_coords))

    def _build_unet(self, name: str, n_coords: int = 0) -> UNetImputer:
        a = self.architecture
        return self._seeded(name, lambda: UNetImputer(self._data.side, len(self._labels.categories), a.unet_map,
                                                      a.unet_ngf, a.unet_levels, n_coords, mask_input=a.unet_mask_input,
                                                      stem_channels=a.unet_stem))

    def _build_teachers(self) -> ImputerEnsemble:
        """``n_teachers`` reference imputers (member 0 is initialised as a lone ``G2`` would be)."""
        return ImputerEnsemble([self._build_unet("g2" + ("" if i == 0 else f"_{i}"))
                                for i in range(self.architecture.n_teachers)])

    def _build_s5(self) -> MultiViewGCN:
        h1, h2 = self.architecture.s5_hidden
        return self._seeded("s5", lambda: MultiViewGCN(self._data.n_genes, h1, h2))

    # ------------------------------------------------------------------ stages 1-2 (reference)
    def _reference_tensors(self, rows: np.ndarray):
        """The sampled reference cells ``rows`` as images, the images the networks read (None:
        the images), their labels and stage 2's targets (None: the cells themselves)."""
        d, sched = self._data, self.schedule
        reference, reference_inputs = reference_sample(self.paired, d, self.architecture, rows)
        inputs = None if reference_inputs is None else self._images(reference_inputs)
        del reference_inputs  # the images are a copy
        targets = None
        if sched.s2_masks == "genes" and sched.s2_target_neighbors > 1:
            # in the image layout, so that the targets do not depend on which genes a fold holds out
            targets = self._images(smoothed_targets(self.paired.reference_X[np.ix_(rows, d.layout)], reference,
                                                    sched.s2_target_neighbors, self.seed, self.device))
        return self._images(reference), inputs, self._onehot(self._labels.reference_codes[rows]), targets

    def _train_reference_stages(self, rows: np.ndarray, tensors) -> None:
        """Stages 1-2 on the reference cells ``rows``, or their cached result."""
        sched, arch = self.schedule, self.architecture
        self.G1 = self._build_g1() if sched.s2_masks == "zeros" else None
        self.G2 = self._build_teachers()
        key = cache.reference_key(
            (arch, sched), (tensors[0].cpu().numpy(), self._labels.reference_codes[rows], np.asarray(self._data.genes)),
            seed=self.seed, device=self.device,
        )
        networks = {"G2": self.G2} if self.G1 is None else {"G1": self.G1, "G2": self.G2}
        cached = cache.get(key) if sched.cache_reference_stages else None
        self._reference_stages_cached = cached is not None
        if cached is not None:
            for name, net in networks.items():
                net.load_state_dict(cached["state"][name])
            self.history.update({k: list(v) for k, v in cached["history"].items()})
            return
        images, inputs, onehot, targets = tensors
        n = images.shape[0]
        per_pass = batches_per_epoch(n, sched.batch_size)
        common = dict(batch_size=sched.batch_size, n_critic=sched.n_critic, gp_weight=sched.gp_weight,
                      adv_weight=sched.adv_weight, log_every=per_pass, progress=progress)
        hist = {}
        if self.G1 is not None:
            D1 = self._build_critic("d1") if sched.adversarial else None
            h1 = S.train_stage1(self.G1, D1, images, onehot, steps=sched.length("s1", n, self._pixels), lr=sched.s1_lr,
                                generator=self._gen("s1"), **common)
            hist.update({f"s1_{k}": v for k, v in h1.items()})
        runs = []
        for i, member in enumerate(self.G2.members):
            suffix = "" if i == 0 else f"_{i}"
            critic = self._build_critic(f"d2{suffix}") if sched.adversarial else None
            runs.append(S.train_stage2(member, critic, self.G1, images, onehot, steps=sched.length("s2", n, self._pixels),
                                       lr=sched.s2_lr, masks=sched.s2_masks, n_genes=self._data.n_genes,
                                       mask_fraction=sched.s2_mask_fraction, inputs=inputs, targets=targets,
                                       generator=self._gen(f"s2{suffix}"), **common))
        for name in runs[0]:  # mean over the members
            hist[f"s2_{name}"] = [float(v) for v in np.mean([r[name] for r in runs], axis=0)]
        self.history.update(hist)
        if sched.cache_reference_stages:
            cache.put(key, networks, hist)

    def _adapt_teachers_to_panel(self, tensors) -> None:
        """Fine-tune each teacher for ``s2_panel_steps`` mini-batches on the reference with
        the spatial panel as its mask (``s2_masks="genes"``): stage 2 learns random gaps,
        this step the gap it will fill. The teachers as stage 2 left them are kept as
        ``G2_general`` (the reliability model's held-out panel genes are other gaps)."""
        sched = self.schedule
        self.G2_general = None
        if sched.s2_panel_steps == 0 or sched.s2_masks != "genes":
            return
        self.G2_general = copy.deepcopy(self.G2)
        images, inputs, onehot, targets = tensors
        observed = self._gene_mask_image(self._data.feature_pos)
        steps = sched.length("s2_panel", images.shape[0], self._pixels)
        runs = [S.train_stage2(member, None, None, images, onehot, steps=steps,
                               batch_size=sched.batch_size, lr=sched.s2_lr, masks="genes", n_genes=self._data.n_genes,
                               mask_fraction=0.0, inputs=inputs, targets=targets, observed=observed,
                               log_every=batches_per_epoch(images.shape[0], sched.batch_size),
                               generator=self._gen(f"s2_panel_{i}"), progress=progress)
                for i, member in enumerate(self.G2.members)]
        self.history["s2_panel_imputer"] = [float(v) for v in np.mean([r["imputer"] for r in runs], axis=0)]

    # ------------------------------------------------------------------ stages 3-5 (spatial)
    def _gene_mask_image(self, positions: np.ndarray) -> torch.Tensor:
        """One image, 1 at the genes at ``positions`` (observed), 0 elsewhere."""
        mask = np.zeros((1, self._data.n_genes), dtype=np.float32)
        mask[0, positions] = 1.0
        return self._images(mask)

    def _panel_images(self, columns: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        """Images with ``columns`` (cells x genes) at the image ``positions``, 0 elsewhere
        (one allocation: the images themselves)."""
        side = self._data.side
        out = torch.zeros((columns.shape[0], side * side), dtype=torch.float32, device=self.device)
        out[:, torch.as_tensor(positions, device=self.device)] = torch.as_tensor(columns, device=self.device)
        return out.view(-1, 1, side, side)

    def _spatial_tensors(self, observed: np.ndarray | None, cells: np.ndarray, values=None):
        """The spatial cells ``cells`` as images with only the panel genes ``observed``
        (feature columns; None: all) kept (``values``: these cells' network-scale panel,
        default the prepared one), the network inputs (None: the images), the gene mask,
        labels and coordinates; and the cells' maxima (``input_scale="cell_max"``, else None)."""
        d = self._data
        rows = d.spatial_rows(self.paired, cells)
        observed = np.arange(self.paired.n_features) if observed is None else observed
        positions = d.feature_pos[observed]

        def kept(v):
            return None if v is None else self._panel_images(v[:, observed], positions)

        tensors = (kept(rows.values if values is None else values), kept(rows.inputs), self._gene_mask_image(positions),
                   self._onehot(self._labels.spatial_codes[cells]), torch.as_tensor(d.coords01[cells], device=self.device))
        return tensors, rows.cell_max

    def _train_student(self, tensors, tag: str = "") -> UNetImputer:
        sched = self.schedule
        images, inputs, gm, onehot, coords = tensors
        G3 = self._build_unet(f"g3{tag}", n_coords=coords.shape[1])
        if sched.s3_init == "teacher":
            G3.init_from_teacher(self.G2.members[0])
        D3 = self._build_critic(f"d3{tag}", n_coords=coords.shape[1]) if sched.adversarial else None
        n = images.shape[0]
        hist = S.train_stage3(G3, self.G2, images, gm, onehot, coords, steps=sched.length("s3", n, self._pixels),
                              batch_size=sched.batch_size, update_every=sched.s3_update_every, lr=sched.s3_lr, D3=D3,
                              gp_weight=sched.gp_weight, adv_weight=sched.adv_weight, inputs=inputs,
                              one_member=sched.s3_targets == "teacher_member",
                              ema_decay=sched.s3_ema_decay, log_every=batches_per_epoch(n, sched.batch_size),
                              generator=self._gen(f"s3{tag}"), progress=progress)
        self.history.update({f"s3_{k}": v for k, v in hist.items()})
        return G3

    def _stage4(self, net, tensors, cells: np.ndarray, tag: str) -> torch.Tensor:
        """Stage-4 values (cells x genes) of ``cells`` by the student ``G3`` or a teacher ensemble."""
        a = self.architecture
        images, inputs, gm, onehot, coords = tensors
        out = S.infer_stage4(net, images, gm, onehot, coords, noise=a.inference_noise, bn_mode=a.bn_inference,
                             batch_size=self.schedule.batch_size, inputs=inputs, cells=cells,
                             noise_seed=derive_seed(self.seed, f"s4{tag}"))
        return S.from_images(out, self._data.n_genes)

    def _stage4_output(self, tensors, cells: np.ndarray) -> torch.Tensor:
        """Stage 4: the student's values, blended with the teacher's by ``s4_teacher_weight``."""
        out = self._stage4(self.G3, tensors, cells, "")
        weight = self.architecture.s4_teacher_weight
        if weight == 0.0:
            return out
        return torch.lerp(out, self._stage4(self.G2, tensors, cells, "_teacher"), weight)

    def _graphs(self, features: torch.Tensor, cells: np.ndarray | None = None):
        """Stage 5's propagation matrices (spatial radius graph within sections, expression
        kNN graph), the spatial edges and a summary."""
        a = self.architecture
        coords = self.paired.coords if cells is None else self.paired.coords[cells]
        sample_ids = self.paired.sample_ids if cells is None else self.paired.sample_ids[cells]
        radius = radius_for_mean_degree(coords, min(a.spatial_degree, coords.shape[0] - 1.5), sample_ids)
        g_sp = radius_graph(coords, radius, sample_ids)
        k = int(min(a.feature_k, features.shape[0] - 1))
        g_ft = feature_knn_graph(features.detach().cpu().numpy(), k, device=self.device)
        adj_s = row_normalized_propagation(g_sp, device=self.device)
        adj_f = row_normalized_propagation(g_ft, device=self.device)
        coo = g_sp.tocoo()
        edges = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64), device=self.device)
        info = {"radius": float(radius), "spatial_mean_degree": float(g_sp.nnz / g_sp.shape[0]),
                "feature_mean_degree": float(g_ft.nnz / g_ft.shape[0])}
        return adj_s, adj_f, edges, info

    def _stage5(self, features: torch.Tensor, train: bool) -> torch.Tensor:
        """Stage 5 on every spatial cell: train ``S5`` (``train``) or run the trained one."""
        sched = self.schedule
        adj_s, adj_f, edges, self._graph_info = self._graphs(features)
        if train:
            self.S5 = self._build_s5()
            mu, hist = S.train_stage5(
                self.S5, features, adj_s, adj_f, edges, torch.as_tensor(self._data.feature_pos, device=self.device),
                epochs=sched.s5_epochs, lr=sched.s5_lr, weight_decay=sched.s5_weight_decay,
                zinb_weight=sched.zinb_weight, sr_weight=sched.sr_weight, kl_weight=sched.kl_weight,
                sr_mode=sched.sr_mode, sr_negatives=sched.sr_negatives, generator=self._gen("s5"), progress=progress,
            )
            self.history.update({f"s5_{k}": v for k, v in hist.items()})
            return mu
        self.S5.train()  # full-batch BatchNorm statistics, as during training
        return self.S5(features, adj_s, adj_f)["mu"]

    # ------------------------------------------------------------------ BaseImputer API
    def _setup(self) -> None:
        self._check_sizes()
        self._spatial_sample = row_sample(self.paired.n_cells, self.schedule.spatial_cells, self.seed, "spatial_sample")
        self._reference_sample = row_sample(self.paired.n_reference, self.schedule.reference_cells, self.seed,
                                            "reference_sample")
        self._data = prepare(self.paired, self.architecture, self._spatial_sample)
        self._pixels = self._data.side ** 2

    def _fit(self) -> None:
        clock = _Clock(self.timings)
        self._resolve()
        self._setup()
        self._labels = settle_labels(self.paired, self.architecture, self.seed)
        rows = self._reference_sample
        reference = self._reference_tensors(rows)
        self._reference_cells = int(rows.size)
        clock("prepare_s")
        self._train_reference_stages(rows, reference)
        clock("stages_1_2_s")
        self._adapt_teachers_to_panel(reference)
        del reference
        clock("panel_s")
        tensors, _ = self._spatial_tensors(None, self._spatial_sample)
        self.G3 = self._train_student(tensors)
        del tensors
        clock("stage3_s")
        self.S5, self._graph_info, self._mu = None, {}, None
        if self.architecture.refine:  # stage 5 trains on every cell's stage-4 values
            cells = np.arange(self.paired.n_cells)
            tensors, self._cell_max = self._spatial_tensors(None, cells)
            s4 = self._stage4_output(tensors, cells)
            del tensors
            clock("stage4_s")
            self._mu = self._stage5(s4, train=True)
            clock("stage5_s")

    def _whole(self) -> bool:
        """Whether every cell is imputed at once: stage 5 reads all cells' stage-4 values, and
        ``bn_inference="batch_stats"`` normalises over consecutive cells."""
        return self.architecture.refine or self.architecture.bn_inference == "batch_stats"

    def _predict_block(self, cells: np.ndarray, stats) -> np.ndarray:
        if self._whole():
            return super()._predict_block(cells, stats)
        tensors, cell_max = self._spatial_tensors(None, cells)
        return self._genes_at(self._stage4_output(tensors, cells), self._data.target_pos, cell_max)

    def _predict(self) -> np.ndarray:
        """Every cell at once (:meth:`_whole`)."""
        if self._mu is None:  # not refined, or a loaded model
            cells = np.arange(self.paired.n_cells)
            tensors, self._cell_max = self._spatial_tensors(None, cells)
            s4 = self._stage4_output(tensors, cells)
            del tensors
            self._mu = s4 if self.S5 is None else self._stage5(s4, train=False)
        return self._genes_at(self._mu, self._data.target_pos, self._cell_max)

    def _genes_at(self, values: torch.Tensor, positions: np.ndarray, cell_max: np.ndarray | None) -> np.ndarray:
        """The genes at image ``positions`` of stage-4/5 ``values``, log-normalised."""
        v = values[:, torch.as_tensor(positions, device=values.device)].detach().cpu().numpy()
        return unscale(v, positions, self._data, cell_max)

    # ------------------------------------------------------------------ reliability
    def _teacher_stage4(self, train_cols: np.ndarray, cells: np.ndarray, tag: str):
        """The teacher's stage-4 values of ``cells`` with only the panel genes ``train_cols``
        observed, and the per-cell scale (``input_scale="cell_max"``: recomputed without
        the other genes)."""
        d, p = self._data, self.paired
        values, cell_max = None, None
        if d.gene_max is None:
            scaled, cell_max = stgnet_scale(p.spatial_counts[np.ix_(cells, train_cols)], p.spatial_library_size[cells])
            values = np.zeros((cells.size, p.n_features), dtype=np.float32)
            values[:, train_cols] = align(scaled, d.reference_panel[:, train_cols], self.architecture.spatial_alignment)
        tensors, _ = self._spatial_tensors(train_cols, cells, values)
        teacher = self.G2 if self.G2_general is None else self.G2_general
        return self._stage4(teacher, tensors, cells, tag), cell_max

    def _predict_heldout(self, train_cols: np.ndarray, heldout_cols: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Held-out panel genes of ``cells`` predicted by the teacher from the other panel genes."""
        values, cell_max = self._teacher_stage4(train_cols, cells, f"_rel{int(heldout_cols[0])}")
        return self._genes_at(values, self._data.feature_pos[heldout_cols], cell_max)

    def _reliability_targets(self, cells: np.ndarray) -> np.ndarray:
        """The target genes of ``cells`` as the teacher predicts them from the whole panel."""
        values, cell_max = self._teacher_stage4(np.arange(self.paired.n_features), cells, "_rel_targets")
        return self._genes_at(values, self._data.target_pos, cell_max)

    def _reliability(self, prediction: np.ndarray) -> np.ndarray:
        if not self.architecture.reliability:
            return np.full(prediction.shape[1], np.nan)
        from ...reliability import reliability_from_heldout

        cells = self.architecture.reliability_cells
        return reliability_from_heldout(self.paired, self._predict_heldout, self._reliability_targets, seed=self.seed,
                                        **({} if cells is None else {"max_cells": cells}))

    def provenance(self) -> dict:
        prov = super().provenance()
        labels: Labels | None = getattr(self, "_labels", None)
        prov["stgnet"] = {
            "labels": None if labels is None else labels.source,
            "reference_cells": getattr(self, "_reference_cells", None),
            "student_cells": None if getattr(self, "_spatial_sample", None) is None else int(self._spatial_sample.size),
            "reference_stages_from_cache": getattr(self, "_reference_stages_cached", None),
            "refined": getattr(self, "S5", None) is not None,
            "graphs": getattr(self, "_graph_info", None),
        }
        return prov

    # ------------------------------------------------------------------ save / load
    def _state_dict(self) -> dict:
        state: dict = {}
        for name in _NETWORKS:
            net = getattr(self, name, None)
            if net is not None:
                state.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        state["spatial_label_codes"] = torch.as_tensor(self._labels.spatial_codes)
        state["reference_label_codes"] = torch.as_tensor(self._labels.reference_codes)
        state["label_categories"] = list(self._labels.categories)
        state["reference_cells"] = self._reference_cells
        return state

    def _load_state_dict(self, state: dict) -> None:
        p = self.paired
        self._setup()
        sp_codes = state["spatial_label_codes"].cpu().numpy().astype(np.int64)
        if sp_codes.shape[0] != p.n_cells:
            raise SpatialImputeInputError("spatial", f"the {sp_codes.shape[0]} cells the model was trained on",
                                          f"{p.n_cells} cells", "pass the spatial data the model was trained with")
        self._labels = Labels(list(state["label_categories"]),
                              state["reference_label_codes"].cpu().numpy().astype(np.int64), sp_codes,
                              {"reference": "saved", "spatial": "saved", "n_labels": len(state["label_categories"])})
        self._reference_cells = int(state["reference_cells"])
        has = {name: any(k.startswith(name + ".") for k in state) for name in _NETWORKS}
        self.G1 = self._build_g1() if has["G1"] else None
        self.G2 = self._build_teachers()
        self.G2_general = self._build_teachers() if has["G2_general"] else None
        self.G3 = self._build_unet("g3", n_coords=self._data.coords01.shape[1])
        self.S5 = self._build_s5() if has["S5"] else None
        for name in _NETWORKS:
            net = getattr(self, name)
            if net is not None:
                net.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
        self._mu = None
        self._reference_stages_cached = None
        self._graph_info = {}
