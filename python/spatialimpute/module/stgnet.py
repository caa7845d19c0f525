"""STGNET stages as pure torch: tensors in, losses and trained weights out
(docs/algorithms/stgnet.md). No AnnData, no I/O; the user-facing orchestration is
:mod:`spatialimpute.model.stgnet`. Every training stage describes one step and runs it in
the shared loop of :mod:`spatialimpute.module.training`.

Stages
------
S1  conditional WGAN-GP generator ``G1`` on reference images (:func:`train_stage1`)
S2  U-Net imputer ``G2`` on reference images (:func:`train_stage2`)
S3  spatial U-Net imputer ``G3`` regressed onto the frozen ``G2`` teacher (:func:`train_stage3`)
S4  inference of ``G3`` (:func:`infer_stage4`)
S5  multi-view GCN refinement with ZINB, spatial regulariser and KL (:func:`train_stage5`)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.critics import gradient_penalty
from .training import MiniBatches, ProgressFn, Step, full_batch, no_progress, train


# --------------------------------------------------------------------------- image layout
def image_side(n_genes: int) -> int:
    """``s = ceil(sqrt(G))``."""
    return max(1, math.ceil(math.sqrt(n_genes)))


def to_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """Pad cell vectors ``(N, G)`` with zeros to ``side**2`` and reshape row-major to
    ``(N, 1, side, side)`` (gene ``j`` at pixel ``(j // side, j % side)``)."""
    n, g = x.shape
    p = side * side
    if g > p:
        raise ValueError(f"to_images: {g} genes do not fit a {side}x{side} image")
    return F.pad(x, (0, p - g)).view(n, 1, side, side)


def from_images(img: torch.Tensor, n_genes: int) -> torch.Tensor:
    """Inverse of :func:`to_images`: ``(N, 1, s, s)`` -> contiguous ``(N, G)`` (padding
    dropped; a strided view would be copied again by every operation that reads it)."""
    return img.reshape(img.shape[0], -1)[:, :n_genes].contiguous()


# --------------------------------------------------------------------------- GAN losses
def generator_loss(target: torch.Tensor, output: torch.Tensor, critic_score: torch.Tensor | None, adv_weight: float = 0.1) -> torch.Tensor:
    """``MSE(target, output) + adv_weight * (1 - mean D)`` (the original ``GeneratorLoss``).

    ``critic_score=None`` drops the adversarial term (used when it sends no gradient)."""
    loss = F.mse_loss(output, target)
    if critic_score is not None:
        loss = loss + adv_weight * (1.0 - critic_score.mean())
    return loss


def critic_loss(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    gp_weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP critic loss ``mean D(fake) - mean D(real) + GP`` (inputs detached)."""
    real = real.detach()
    fake = fake.detach()
    return critic(fake).mean() - critic(real).mean() + gradient_penalty(critic, real, fake, generator=generator, weight=gp_weight)


def _rand_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _adam(module: nn.Module | None, lr: float, betas: tuple[float, float]):
    return None if module is None else torch.optim.Adam(module.parameters(), lr=lr, betas=betas, fused=True)


# --------------------------------------------------------------------------- S1
def train_stage1(
    G1: nn.Module,
    D1: nn.Module | None,
    images: torch.Tensor,
    onehot: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 100,
    n_critic: int = 5,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.5, 0.9),
    gp_weight: float = 10.0,
    adv_weight: float = 0.1,
    log_every: int = 1,
    generator: torch.Generator,
    progress: ProgressFn = no_progress,
) -> dict[str, list[float]]:
    """Train the conditional generator ``G1`` for ``steps`` mini-batches against ``D1``
    (WGAN-GP: a critic update per batch, a generator update every ``n_critic`` batches).

    Generator loss ``MSE(x, G1(z, y)) + adv_weight (1 - mean D1)``; ``D1=None`` drops the
    critic and the adversarial term, and ``G1`` is updated on every batch.

    Returns
    -------
    dict
        ``"generator"`` (and ``"critic"``) losses, means over blocks of ``log_every`` steps.
    """
    dev = images.device
    G1.train()
    if D1 is not None:
        D1.train()

    def prepare(idx):
        return images[idx], onehot[idx]

    def critic_loss_(batch):
        x, y = batch
        z = torch.randn((x.shape[0], G1.latent_dim), generator=generator, device=dev)
        with torch.no_grad():
            fake = G1(z, y)
        return critic_loss(lambda t: D1(t, y), x, fake, gp_weight=gp_weight, generator=generator)

    def generator_loss_(batch):
        x, y = batch
        z = torch.randn((x.shape[0], G1.latent_dim), generator=generator, device=dev)
        fake = G1(z, y)
        return generator_loss(x, fake, D1(fake, y) if D1 is not None else None, adv_weight)

    step = Step(prepare, generator_loss_, critic_loss_ if D1 is not None else None)
    return train(step, steps=steps, batches=MiniBatches(images.shape[0], batch_size, generator, dev),
                 optimizer=_adam(G1, lr, betas), critic=D1, critic_optimizer=_adam(D1, lr, betas),
                 update_every=n_critic if D1 is not None else 1, log_every=log_every, progress=progress,
                 desc="STGNET S1 generator")


# --------------------------------------------------------------------------- S2
def train_stage2(
    G2: nn.Module,
    D2: nn.Module | None,
    G1: nn.Module | None,
    images: torch.Tensor,
    onehot: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 100,
    n_critic: int = 5,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    gp_weight: float = 10.0,
    adv_weight: float = 0.1,
    masks: str = "zeros",
    n_genes: int | None = None,
    mask_fraction: float = 0.2,
    inputs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    log_every: int = 1,
    generator: torch.Generator,
    progress: ProgressFn = no_progress,
) -> dict[str, list[float]]:
    """Train the reference imputer ``G2`` for ``steps`` mini-batches against ``D2``.

    Critic: real ``r``, fake ``x_bar = m x + (1 - m) G2(x, m, u, y)``. Imputer (every
    ``n_critic`` batches, fresh ``u``): ``MSE(r, x_bar) + adv_weight (1 - mean D2(x_bar))``.
    ``D2=None``: no critic, no adversarial term, an imputer update on every batch.

    Parameters
    ----------
    masks
        ``"zeros"`` (the original): ``m = 1[x > 0]`` and the target ``r = G1(z, y)`` is a
        sample of the cell's class from the frozen generator (kept in train mode:
        BatchNorm uses batch statistics, as in the original). ``"genes"``: masked-gene
        training on the real cells, ``m`` hides each of the first ``n_genes`` pixels with
        probability ``mask_fraction`` (padding is always hidden) and the target is the
        cell itself, ``r = x`` (``G1`` is not used and may be ``None``).
    n_genes
        Number of real genes in the image (``masks="genes"``; default: all pixels).
    mask_fraction
        Probability that a gene is hidden (``masks="genes"``; 0 = only the genes outside
        ``observed``).
    inputs
        What the network reads in place of ``x`` (same shape as ``images``, e.g. per-gene
        z-scores); the observed entries of ``x_bar`` stay ``images``. Default: ``images``.
    targets
        ``masks="genes"``: what the hidden entries are regressed onto, per cell (same shape
        as ``images``). Default: ``images``, the cell itself.
    observed
        ``masks="genes"``: the genes that may be observed (an image, 1 = observed; default:
        every real gene); the others are always hidden.

    Returns
    -------
    dict
        ``"imputer"`` (and ``"critic"``) losses, means over blocks of ``log_every`` steps.
    """
    if masks not in ("zeros", "genes"):
        raise ValueError(f'masks: expected "zeros" or "genes"; found {masks!r}')
    dev = images.device
    frozen_g1 = masks == "zeros"
    if frozen_g1:
        G1.train()
        G1.requires_grad_(False)
    G2.train()
    if D2 is not None:
        D2.train()
    n_pix = images[0].numel()
    real_pixels = (torch.arange(n_pix, device=dev) < (n_pix if n_genes is None else n_genes)).to(images.dtype)
    real_pixels = real_pixels.view(images.shape[1:])

    def prepare(idx):
        x, y = images[idx], onehot[idx]
        x_in = x if inputs is None else inputs[idx]
        if frozen_g1:
            m = (x > 0).to(x.dtype)
            with torch.no_grad():
                r = G1(torch.randn((x.shape[0], G1.latent_dim), generator=generator, device=dev), y)
        else:
            m = (real_pixels if observed is None else observed).expand_as(x)
            if mask_fraction > 0:
                m = m * (torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype) >= mask_fraction).to(x.dtype)
            r = x if targets is None else targets[idx]
        return x, x_in, y, m, r

    def critic_loss_(batch):
        x, x_in, y, m, r = batch
        with torch.no_grad():
            x_bar = m * x + (1 - m) * G2(x_in, m, _rand_like(x, generator), y)
        return critic_loss(lambda t: D2(t, y), r, x_bar, gp_weight=gp_weight, generator=generator)

    def imputer_loss(batch):
        x, x_in, y, m, r = batch
        x_bar = m * x + (1 - m) * G2(x_in, m, _rand_like(x, generator), y)
        return generator_loss(r, x_bar, D2(x_bar, y) if D2 is not None else None, adv_weight)

    step = Step(prepare, imputer_loss, critic_loss_ if D2 is not None else None)
    try:
        hist = train(step, steps=steps, batches=MiniBatches(images.shape[0], batch_size, generator, dev),
                     optimizer=_adam(G2, lr, betas), critic=D2, critic_optimizer=_adam(D2, lr, betas),
                     update_every=n_critic if D2 is not None else 1, log_every=log_every, progress=progress,
                     desc="STGNET S2 reference imputer")
    finally:
        if frozen_g1:
            G1.requires_grad_(True)
    hist["imputer"] = hist.pop("generator", [])
    return hist


# --------------------------------------------------------------------------- S3
def train_stage3(
    G3: nn.Module,
    G2: nn.Module,
    images: torch.Tensor,
    gene_mask: torch.Tensor,
    onehot: torch.Tensor,
    coords: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 100,
    update_every: int = 5,
    lr: float = 1e-5,
    betas: tuple[float, float] = (0.9, 0.999),
    D3: nn.Module | None = None,
    gp_weight: float = 10.0,
    adv_weight: float = 0.1,
    inputs: torch.Tensor | None = None,
    one_member: bool = False,
    ema_decay: float = 0.0,
    log_every: int = 1,
    generator: torch.Generator,
    progress: ProgressFn = no_progress,
) -> dict[str, list[float]]:
    """Train the spatial imputer ``G3`` for ``steps`` mini-batches as a student of the frozen
    teacher ``G2``.

    Every ``update_every`` batches, with fresh ``u'``: ``t' = g x + (1 - g) G2(x, g, u', y)``
    and loss ``MSE(G3(x, g, u, y, c), t')`` (observed genes: real values; held-out genes
    and padding: the teacher's imputation). ``G2`` stays in train mode (batch statistics)
    and runs without gradients.

    With ``D3`` given (paper preset) the spatial critic is trained on every batch (real: the
    student's output, fake: the teacher's, same ``u``) and ``adv_weight (1 - mean D3(t'))``
    is added to the logged loss; that term has no gradient w.r.t. ``G3``, so ``G3``'s
    updates do not depend on it.

    ``inputs`` (default ``images``): what both networks read in place of ``x``, as in
    :func:`train_stage2`. ``one_member``: a teacher ensemble (``G2.members``) answers each update with one of its
    members drawn at random (in expectation the ensemble's mean, at the cost of one member).

    ``ema_decay`` > 0: ``G3`` ends with the exponential moving average of its parameters
    over the updates, ``a <- ema_decay a + (1 - ema_decay) theta`` from its initial ones,
    not the last iterate; its BatchNorm statistics are then re-estimated for those
    parameters over one pass of the data (:func:`_reestimate_batchnorm`).

    Returns
    -------
    dict
        ``"student"`` (and ``"critic"``) losses, means over blocks of ``log_every`` steps.
    """
    dev = images.device
    averaged = [p.detach().clone() for p in G3.parameters()] if ema_decay > 0 else None
    if D3 is not None:
        D3.train()
    G2.train()
    G2.requires_grad_(False)
    G3.train()
    g = gene_mask.expand_as(images[:1])

    def prepare(idx):
        x = images[idx]
        return x, (x if inputs is None else inputs[idx]), g.expand_as(x), onehot[idx], coords[idx], _rand_like(x, generator)

    members = list(G2.members) if one_member else [G2]

    def teacher(x, x_in, gm, u, y):
        net = members[int(torch.randint(len(members), (1,), generator=generator))] if len(members) > 1 else members[0]
        with torch.no_grad():
            return gm * x + (1 - gm) * net(x_in, gm, u, y)

    def critic_loss_(batch):
        x, x_in, gm, y, c, u = batch
        with torch.no_grad():
            o = G3(x_in, gm, u, y, c)
        t = teacher(x, x_in, gm, u, y)
        return critic_loss(lambda im: D3(im, y, c), o, t, gp_weight=gp_weight, generator=generator)

    def student_loss(batch):
        x, x_in, gm, y, c, u = batch
        o = G3(x_in, gm, u, y, c)
        t2 = teacher(x, x_in, gm, _rand_like(x, generator), y)
        loss = F.mse_loss(o, t2)
        logged = loss.detach()
        if D3 is not None:
            with torch.no_grad():
                logged = logged + adv_weight * (1.0 - D3(t2, y, c).mean())
        return loss, {"student": logged}

    def average():
        with torch.no_grad():
            for a, p in zip(averaged, G3.parameters()):
                a.lerp_(p, 1.0 - ema_decay)

    step = Step(prepare, student_loss, critic_loss_ if D3 is not None else None,
                after_update=average if averaged is not None else None)
    try:
        hist = train(step, steps=steps, batches=MiniBatches(images.shape[0], batch_size, generator, dev),
                     optimizer=_adam(G3, lr, betas), critic=D3, critic_optimizer=_adam(D3, lr, betas),
                     update_every=update_every, log_every=log_every, progress=progress,
                     desc="STGNET S3 spatial imputer")
    finally:
        G2.requires_grad_(True)
    if averaged is not None:
        with torch.no_grad():
            for a, p in zip(averaged, G3.parameters()):
                p.copy_(a)
            _reestimate_batchnorm(G3, images, g, onehot, coords, inputs, batch_size, generator)
    hist.setdefault("student", [])
    return hist


def _reestimate_batchnorm(net, images, gene_mask, onehot, coords, inputs, batch_size, generator) -> None:
    """Recompute ``net``'s BatchNorm running statistics for its current parameters: the
    plain mean over one pass of mini-batches (as after averaging weights)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    batches = MiniBatches(images.shape[0], batch_size, generator, images.device)
    for _ in range(batches.per_pass):
        idx = batches()
        x = images[idx] if inputs is None else inputs[idx]
        net(x, gene_mask.expand_as(x), _rand_like(x, generator), onehot[idx], coords[idx])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


# --------------------------------------------------------------------------- S4
def _inference_batches(n: int, batch_size: int) -> list[slice]:
    """Sequential batches; a trailing batch of one cell is merged into the previous one
    (BatchNorm cannot use batch statistics of a single sample)."""
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    return [slice(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


@torch.no_grad()
def infer_stage4(
    G3: nn.Module,
    images: torch.Tensor,
    gene_mask: torch.Tensor,
    onehot: torch.Tensor,
    coords: torch.Tensor,
    *,
    noise: str = "uniform",
    bn_mode: str = "running_stats",
    batch_size: int = 100,
    inputs: torch.Tensor | None = None,
    cells: np.ndarray,
    noise_seed: int,
) -> torch.Tensor:
    """Impute spatial images: ``g x + (1 - g) G3(x_in, g, eps, y, c)``.

    Parameters
    ----------
    noise
        ``"uniform"`` (U(0, 1), as in training) or ``"normal"`` (N(0, 1), the original).
    bn_mode
        ``"running_stats"`` (eval mode) or ``"batch_stats"`` (train-mode BatchNorm over
        sequential batches of ``batch_size`` cells, the original; the running statistics
        are left as they were).
    inputs
        What the network reads (default ``images``), as in :func:`train_stage2`.
    cells, noise_seed
        The cells' indices (one per image) and the seed of their noise
        (:func:`cell_noise`: a cell's noise does not depend on the other cells imputed
        with it).

    Returns
    -------
    torch.Tensor
        ``(N, 1, s, s)`` images.
    """
    if noise not in ("uniform", "normal"):
        raise ValueError(f'inference_noise: expected "uniform" or "normal"; found {noise!r}')
    if bn_mode not in ("running_stats", "batch_stats"):
        raise ValueError(f'bn_inference: expected "running_stats" or "batch_stats"; found {bn_mode!r}')
    was_training = G3.training
    G3.train(bn_mode == "batch_stats")
    saved = {k: v.clone() for k, v in G3.state_dict().items() if "running" in k or "num_batches" in k} \
        if bn_mode == "batch_stats" else None
    out = torch.empty_like(images)
    for sl in _inference_batches(images.shape[0], batch_size):
        x = images[sl]
        x_in = x if inputs is None else inputs[sl]
        gm = gene_mask.expand_as(x)
        eps = cell_noise(cells[sl], noise_seed, tuple(x.shape[1:]), noise).to(device=x.device, dtype=x.dtype)
        out[sl] = gm * x + (1 - gm) * G3(x_in, gm, eps, onehot[sl], coords[sl])
    if saved is not None:
        G3.load_state_dict({**G3.state_dict(), **saved})
    G3.train(was_training)
    return out


def cell_noise(cells: np.ndarray, seed: int, shape: tuple[int, ...], kind: str = "uniform") -> torch.Tensor:
    """Noise of ``shape`` per cell (``"uniform"`` U(0, 1) or ``"normal"`` N(0, 1)), each cell's
    drawn from its own stream (``seed``, cell index): the same whichever block of cells it
    is imputed in."""
    out = torch.empty((len(cells), *shape))
    gen = torch.Generator()
    draw = torch.rand if kind == "uniform" else torch.randn
    for i, cell in enumerate(np.asarray(cells, dtype=np.int64)):
        gen.manual_seed((int(seed) << 32) | int(cell))
        out[i] = draw(shape, generator=gen)
    return out


# --------------------------------------------------------------------------- S5 losses
class _AllPairsSoftplus(torch.autograd.Function):
    """``sum_{i != j} softplus(u_i . u_j)`` computed in row blocks (memory ``block x N``).

    Backward: ``dS/du_i = 2 sum_{j != i} sigmoid(u_i . u_j) u_j`` (the matrix is symmetric),
    recomputed blockwise; nothing of size N x N is ever held.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, block: int) -> torch.Tensor:  # type: ignore[override]
        n = u.shape[0]
        total = u.new_zeros((), dtype=torch.float64)
        for s in range(0, n, block):
            e = min(n, s + block)
            c = u[s:e] @ u.T
            sp_ = F.softplus(c)
            ar = torch.arange(e - s, device=u.device)
            sp_[ar, ar + s] = 0.0
            total = total + sp_.sum(dtype=torch.float64)
        ctx.save_for_backward(u)
        ctx.block = block
        return total.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        n = u.shape[0]
        grad = torch.empty_like(u)
        for s in range(0, n, ctx.block):
            e = min(n, s + ctx.block)
            w = torch.sigmoid(u[s:e] @ u.T)
            ar = torch.arange(e - s, device=u.device)
            w[ar, ar + s] = 0.0
            grad[s:e] = 2.0 * (w @ u)
        return grad * grad_out, None


def _unit_rows(emb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return emb / emb.norm(dim=1, keepdim=True).clamp_min(eps)


def spatial_regularizer(
    emb: torch.Tensor,
    edges: torch.Tensor,
    *,
    mode: str = "exact",
    block_size: int | None = None,
    n_negative: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spatial regulariser ``SR = -1/2 [mean(S * log M) + mean((1 - S) * log(1 - M))]`` with
    ``M = sigmoid(cos(e_i, e_j))`` (cosine diagonal set to 0), means over all N^2 entries,
    never materialising an N x N matrix.

    Uses ``log sigmoid(c) = -softplus(-c)`` and ``log(1 - sigmoid(c)) = -softplus(c)``:
    ``2 N^2 SR = sum_E softplus(-c) + sum_{all} softplus(c) - sum_E softplus(c)`` where the
    all-pairs sum includes the diagonal (``c_ii = 0`` -> ``log 2`` each).

    Parameters
    ----------
    emb
        Embeddings ``(N, d)``.
    edges
        ``(2, E)`` int64 directed edge list of the 0/1 spatial graph (both directions, no
        self loops).
    mode
        ``"exact"``: the all-pairs sum in row blocks (O(N^2) time, O(block N) memory).
        ``"sampled"``: unbiased estimate of the all-pairs sum from ``n_negative`` uniform
        columns shared by all rows (O(N n_negative) time and memory; a flagged deviation
        for very large N).
    block_size
        Rows per block (default: keeps ``block x N <= 2^24``).

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    n = emb.shape[0]
    u = _unit_rows(emb)
    src, dst = edges[0], edges[1]
    c_e = (u[src] * u[dst]).sum(dim=1)
    edge_term = (F.softplus(-c_e) - F.softplus(c_e)).sum()
    if mode == "exact":
        block = block_size or max(1, min(n, (1 << 24) // max(n, 1)))
        all_pairs = _AllPairsSoftplus.apply(u, block) + n * math.log(2.0)
    elif mode == "sampled":
        # one shared set of uniformly drawn columns: an (N x m) product, memory O(N m)
        j = torch.randint(0, n, (n_negative,), generator=generator, device=emb.device)
        c = u @ u[j].T
        c = torch.where(j[None, :] == torch.arange(n, device=emb.device)[:, None], torch.zeros_like(c), c)
        all_pairs = F.softplus(c).sum() * (n / n_negative)
    else:
        raise ValueError(f'sr_mode: expected "exact" or "sampled"; found {mode!r}')
    return 0.5 * (edge_term + all_pairs) / (n * n)


def spatial_regularizer_dense(emb: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Dense reference implementation of :func:`spatial_regularizer` (O(N^2) memory; tests
    only)."""
    u = _unit_rows(emb)
    cos = u @ u.T
    cos = cos - torch.diag(torch.diag(cos))
    m = torch.sigmoid(cos)
    neg = 1.0 - adjacency
    return -0.5 * ((adjacency * torch.log(m)).mean() + (neg * torch.log(1.0 - m)).mean())


def kl_observed(target: torch.Tensor, mu: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Batch-mean ``KL(softmax(target) || softmax(mu))`` over the observed genes only (the
    original used held-out genes: test-set leakage)."""
    t = target[:, observed]
    p = mu[:, observed]
    return F.kl_div(F.log_softmax(p, dim=1), F.softmax(t, dim=1), reduction="batchmean")


def train_stage5(
    model: nn.Module,
    features: torch.Tensor,
    adj_spatial: torch.Tensor,
    adj_feature: torch.Tensor,
    spatial_edges: torch.Tensor,
    observed: torch.Tensor,
    *,
    epochs: int = 101,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    zinb_weight: float = 1.0,
    sr_weight: float = 1.0,
    kl_weight: float = 10.0,
    sr_mode: str = "exact",
    sr_block_size: int | None = None,
    sr_negatives: int = 64,
    generator: torch.Generator,
    progress: ProgressFn = no_progress,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Full-batch refinement for a fixed number of epochs (no test-set epoch selection).

    Loss ``zinb_weight * ZINB(X) + sr_weight * SR + kl_weight * KL_observed``.

    Returns
    -------
    mu, history
        ``mu`` (N, G) from a forward pass after the last update (full-batch BatchNorm
        statistics, as during training), and per-epoch losses (``total``, ``zinb``, ``sr``,
        ``kl``).
    """
    from ..nn.zinb import zinb_nll

    model.train()

    def loss(_):
        out = model(features, adj_spatial, adj_feature)
        l_zinb = zinb_nll(features, out["pi"], out["theta"], out["mu"])
        l_sr = spatial_regularizer(out["emb"], spatial_edges, mode=sr_mode, block_size=sr_block_size,
                                   n_negative=sr_negatives, generator=generator)
        l_kl = kl_observed(features, out["mu"], observed) if observed.numel() else features.new_zeros(())
        total = zinb_weight * l_zinb + sr_weight * l_sr + kl_weight * l_kl
        return total, {"total": total, "zinb": l_zinb, "sr": l_sr, "kl": l_kl}

    hist = train(Step(lambda batch: batch, loss), steps=epochs, batches=full_batch,
                 optimizer=torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay),
                 release_memory=features.device.type == "cpu", progress=progress, desc="STGNET S5 GCN refinement")
    with torch.no_grad():
        out = model(features, adj_spatial, adj_feature)
    return out["mu"].detach(), hist
