"""STGNET networks and losses: shapes, gradient penalty, ZINB likelihood, spatial regulariser."""

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln

from spatialimpute.module import stgnet as S
from spatialimpute.nn.critics import ConvCritic, gradient_penalty
from spatialimpute.nn.gcn import MultiViewGCN
from spatialimpute.nn.generators import ConvDataGenerator
from spatialimpute.nn.unet import ImputerEnsemble, UNetCore, UNetImputer, _UNetLevel, unet_sizes
from spatialimpute.nn.zinb import ZINBDecoder, zinb_nll


def _onehot(b, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.one_hot(torch.randint(0, c, (b,), generator=g), c).float()


def test_paper_unet_geometry():
    assert unet_sizes(128, 5) == [128, 63, 31, 15, 7, 3]
    assert unet_sizes(32, 4) == [32, 15, 7, 3, 1]
    with pytest.raises(ValueError, match="inner size"):
        unet_sizes(32, 5)


@pytest.mark.parametrize("map_size,levels", [(16, 3), (32, 4), (64, 5)])
def test_unet_imputer_shapes(map_size, levels):
    torch.manual_seed(0)
    s, c, b = 6, 4, 3
    net = UNetImputer(s, c, map_size=map_size, ngf=4, n_levels=levels, n_coords=2)
    x = torch.rand(b, 1, s, s)
    out = net(x, (x > 0.5).float(), torch.rand_like(x), _onehot(b, c), torch.rand(b, 2))
    assert out.shape == (b, 1, s, s)
    assert ((out > 0) & (out < 1)).all()
    core = UNetCore(5, 1, ngf=4, n_levels=levels)
    assert core(torch.rand(2, 5, map_size, map_size)).shape[-1] == 2 * unet_sizes(map_size, levels)[1] + 1
    with pytest.raises(ValueError, match="coordinates"):
        net(x, x, x, _onehot(b, c))


def test_unet_mask_input_lets_the_network_see_the_mask():
    """With ``x == u`` the blended input ``x m + u (1 - m)`` is the same for every mask: only
    a network that also reads the mask (the paper's ``(x, m)`` input) can respond to it."""
    torch.manual_seed(0)
    s, c, b = 4, 2, 6
    x = torch.rand(b, 1, s, s)
    m1, m2 = torch.ones_like(x), (torch.rand_like(x) > 0.5).float()
    y = _onehot(b, c)
    for mask_input, same in ((False, True), (True, False)):
        net = UNetImputer(s, c, map_size=16, ngf=4, n_levels=3, mask_input=mask_input).eval()
        with torch.no_grad():
            a, b_ = net(x, m1, x, y), net(x, m2, x, y)
        assert torch.allclose(a, b_) is same


def test_student_initialised_from_teacher_starts_as_the_teacher():
    torch.manual_seed(0)
    s, c, b = 4, 3, 5
    teacher = UNetImputer(s, c, 16, 4, 3, mask_input=True)
    teacher.train()(torch.rand(8, 1, s, s), torch.ones(8, 1, s, s), torch.rand(8, 1, s, s), _onehot(8, c))  # move BN stats
    student = UNetImputer(s, c, 16, 4, 3, n_coords=2, mask_input=True)
    student.init_from_teacher(teacher)
    x, m, u, y = torch.rand(b, 1, s, s), (torch.rand(b, 1, s, s) > 0.3).float(), torch.rand(b, 1, s, s), _onehot(b, c)
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(x, m, u, y, torch.rand(b, 2)), teacher.eval()(x, m, u, y))
    with pytest.raises(ValueError, match="same geometry"):
        UNetImputer(s, c, 16, 8, 3, n_coords=2, mask_input=True).init_from_teacher(teacher)
    with pytest.raises(ValueError, match="without"):
        teacher.init_from_teacher(student)


def test_imputer_ensemble_is_the_mean_of_its_members():
    torch.manual_seed(0)
    s, c, b = 4, 3, 6
    members = [UNetImputer(s, c, 16, 4, 3, mask_input=True).eval() for _ in range(3)]
    ensemble = ImputerEnsemble(members).eval()
    args = torch.rand(b, 1, s, s), torch.ones(b, 1, s, s), torch.rand(b, 1, s, s), _onehot(b, c)
    with torch.no_grad():
        outs = [m(*args) for m in members]
        torch.testing.assert_close(ensemble(*args), sum(outs) / 3)
        assert not torch.allclose(outs[0], outs[1])  # independently initialised
        torch.testing.assert_close(ImputerEnsemble(members[:1]).eval()(*args), outs[0])
    with pytest.raises(ValueError, match="at least one"):
        ImputerEnsemble([])


def test_stage2_observed_genes_mask():
    """``observed``: genes outside it are hidden in every cell of every batch, the others
    with probability ``mask_fraction`` (0: never)."""

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.level = torch.nn.Parameter(torch.zeros(()))
            self.masks = []

        def forward(self, x, m, u, y):
            self.masks.append(m.detach().clone())
            return torch.sigmoid(self.level).expand_as(x)

    s, c, n = 4, 2, 400
    images = torch.zeros(n, 1, s, s)
    images[..., 1, :] = 0.9
    observed = torch.ones(1, 1, s, s)
    observed[..., 1, :] = 0
    levels = []
    for fraction in (0.0, 0.5):
        net = Recorder()
        S.train_stage2(net, None, None, images, _onehot(n, c), steps=8, batch_size=100, lr=0.1,
                       masks="genes", mask_fraction=fraction, observed=observed,
                       generator=torch.Generator().manual_seed(0))
        masks = torch.cat(net.masks)
        assert masks.shape[0] == 2 * n
        assert (masks[..., 1, :] == 0).all()
        seen = masks[..., [0, 2, 3], :].mean().item()
        assert seen == 1.0 if fraction == 0.0 else abs(seen - 0.5) < 0.03, seen
        levels.append(torch.sigmoid(net.level).item())
    # only hidden entries are regressed onto (from 0.5): the row at 0.9, then also hidden zeros
    assert levels[0] > 0.6 and levels[1] < 0.45, levels


def test_stage3_ema_is_the_moving_average_of_the_iterates():
    """With ``ema_decay`` the student ends at the moving average of its parameters after
    each update (from its initial ones), recomputed here from runs stopped after k updates."""
    s, c, n, decay = 3, 2, 40, 0.6
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, s, s, generator=gen)
    gm = torch.ones(1, 1, s, s)
    gm[..., 0, :] = 0
    onehot, coords = _onehot(n, c), torch.rand(n, 2, generator=gen)
    torch.manual_seed(1)
    teacher = UNetImputer(s, c, 16, 4, 3)
    start = UNetImputer(s, c, 16, 4, 3, n_coords=2).state_dict()

    def run(steps, ema_decay):  # each step's batch is every cell
        net = UNetImputer(s, c, 16, 4, 3, n_coords=2)
        net.load_state_dict(start)
        S.train_stage3(net, teacher, images, gm, onehot, coords, steps=steps, batch_size=n, update_every=1,
                       lr=0.05, ema_decay=ema_decay, generator=torch.Generator().manual_seed(2))
        return dict(net.named_parameters())

    iterates = [run(k, 0.0) for k in range(4)]
    averaged = run(3, decay)
    for name, value in averaged.items():
        expected = iterates[0][name].detach()
        for it in iterates[1:]:
            expected = decay * expected + (1 - decay) * it[name].detach()
        torch.testing.assert_close(value.detach(), expected)
        if name == "fc_out.weight":
            assert not torch.allclose(expected, iterates[3][name].detach())


def test_stage3_ema_reestimates_batchnorm_for_the_averaged_weights():
    """After averaging, BatchNorm statistics are those of the averaged network over the data
    (one batch of every cell: exactly its batch mean), not the last iterate's."""
    s, c, n = 3, 2, 40
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, s, s, generator=gen)
    onehot, coords = _onehot(n, c), torch.rand(n, 2, generator=gen)
    torch.manual_seed(1)
    teacher = UNetImputer(s, c, 16, 4, 3)
    net = UNetImputer(s, c, 16, 4, 3, n_coords=2)
    S.train_stage3(net, teacher, images, torch.ones(1, 1, s, s), onehot, coords, steps=3, batch_size=n,
                   update_every=1, lr=0.05, ema_decay=0.6, generator=torch.Generator().manual_seed(2))
    norm = net.coord_branch[2]  # its input depends on the coordinates only
    seen = []
    handle = norm.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    net.eval()(images, torch.ones_like(images), torch.rand_like(images), onehot, coords)
    handle.remove()
    features = seen[0]
    torch.testing.assert_close(norm.running_mean, features.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, features.var((0, 2, 3), unbiased=True))


def test_stage4_reads_inputs_and_keeps_observed_images():
    """``inputs`` feed the network; observed entries of the output are the images' values."""
    torch.manual_seed(0)
    s, c, n = 3, 2, 10
    images = torch.rand(n, 1, s, s)
    inputs = torch.randn(n, 1, s, s)
    gm = torch.ones(1, 1, s, s)
    gm[..., 0, :] = 0
    onehot, coords = _onehot(n, c), torch.rand(n, 2)
    net = UNetImputer(s, c, 16, 4, 3, n_coords=2, mask_input=True)
    out = S.infer_stage4(net, images, gm, onehot, coords, batch_size=4, inputs=inputs, cells=np.arange(n), noise_seed=3)
    eps = S.cell_noise(np.arange(n), 3, (1, s, s))
    with torch.no_grad():
        expected = net.eval()(inputs, gm.expand_as(images), eps, onehot, coords)
    torch.testing.assert_close(out[..., 1:, :], images[..., 1:, :])
    torch.testing.assert_close(out[..., 0, :], expected[..., 0, :])


def test_unet_skip_is_activated_input():
    """The original's in-place LeakyReLU: the concatenated skip is LReLU(x), not x."""
    torch.manual_seed(0)
    level = _UNetLevel(3, 4, None)
    x = torch.randn(2, 3, 7, 7)
    out = level(x)
    assert out.shape == (2, 6, 7, 7)
    torch.testing.assert_close(out[:, :3], torch.nn.functional.leaky_relu(x, 0.2))


def test_generator_and_critic_shapes():
    torch.manual_seed(0)
    s, c, b = 5, 3, 4
    g1 = ConvDataGenerator(s, c, latent_dim=16, trunk_channels=(8, 4))
    img = g1(torch.randn(b, 16), _onehot(b, c))
    assert img.shape == (b, 1, s, s) and ((img > 0) & (img < 1)).all()
    for map_size in (16, 64):
        d = ConvCritic(s, c, map_size=map_size)
        assert d(img, _onehot(b, c)).shape == (b,)
    d3 = ConvCritic(s, c, map_size=16, n_coords=2)
    score = d3(img, _onehot(b, c), torch.rand(b, 2))
    assert score.shape == (b,) and ((score > 0) & (score < 1)).all()
    with pytest.raises(ValueError, match="power of two"):
        ConvCritic(s, c, map_size=24)
    # paper geometry of G1 has eps=0.8 BatchNorms
    paper = ConvDataGenerator(s, c)
    assert any(isinstance(m, torch.nn.BatchNorm2d) and m.eps == 0.8 for m in paper.modules())


def test_gradient_penalty_linear_critic_known_answer():
    """For D(x) = <w, x> the input gradient is w everywhere: GP = lambda (||w|| - 1)^2."""
    torch.manual_seed(0)
    w = torch.randn(12, requires_grad=True)
    real, fake = torch.rand(5, 1, 3, 4), torch.rand(5, 1, 3, 4)
    gp = gradient_penalty(lambda x: x.reshape(x.shape[0], -1) @ w, real, fake, weight=10.0)
    norm = w.detach().norm()
    assert gp.item() == pytest.approx(10.0 * (norm.item() - 1.0) ** 2, rel=1e-5)
    gp.backward()
    expected = 2 * 10.0 * (norm - 1.0) * w.detach() / norm
    torch.testing.assert_close(w.grad, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="shapes differ"):
        gradient_penalty(lambda x: x.sum(1), real, fake[:2])


def test_zinb_nll_matches_direct_computation():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.uniform(0, 1, n)
    y[:60] = 0.0
    pi, theta, mu = rng.uniform(0.05, 0.9, n), rng.uniform(0.2, 30, n), rng.uniform(0.01, 0.99, n)
    eps = 1e-10
    nb = (gammaln(theta + eps) + gammaln(y + 1) - gammaln(y + theta + eps)
          + (theta + y) * np.log1p(mu / (theta + eps)) + y * (np.log(theta + eps) - np.log(mu + eps)))
    pos = nb - np.log(1 - pi + eps)
    zero = -np.log(pi + (1 - pi) * (theta / (theta + mu + eps)) ** theta + eps)
    expected = np.where(y < 1e-8, zero, pos).mean()
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    got = zinb_nll(t(y), t(pi), t(theta), t(mu)).item()
    assert got == pytest.approx(expected, rel=1e-10)
    # for y > 0 the NB part is the negative log of the NB pmf (scipy form) for integer y
    yi = np.array([1.0, 3.0, 7.0])
    th, m_ = np.array([2.0, 5.0, 0.7]), np.array([0.5, 2.0, 4.0])
    from scipy.stats import nbinom

    direct = -nbinom.logpmf(yi, th, th / (th + m_)) - np.log(1 - 0.2)
    got = [zinb_nll(t([a]), t([0.2]), t([b]), t([c])).item() for a, b, c in zip(yi, th, m_)]
    np.testing.assert_allclose(got, direct, rtol=1e-8)


def test_zinb_decoder_ranges():
    torch.manual_seed(0)
    dec = ZINBDecoder(8, 5, hidden=16)
    pi, theta, mu = dec(torch.randn(10, 8))
    assert pi.shape == theta.shape == mu.shape == (10, 5)
    assert ((pi > 0) & (pi < 1)).all() and (theta >= 1e-4).all() and (theta <= 1e4).all() and ((mu > 0) & (mu < 1)).all()


def _random_graph(n, p, seed):
    rng = np.random.default_rng(seed)
    a = (rng.uniform(size=(n, n)) < p).astype(np.float64)
    a = np.triu(a, 1)
    a = a + a.T
    return a


@pytest.mark.parametrize("block", [1, 7, 64])
def test_spatial_regularizer_blockwise_equals_dense(block):
    n = 23
    a = _random_graph(n, 0.2, 1)
    emb = torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    e1 = emb.clone().requires_grad_(True)
    e2 = emb.clone().requires_grad_(True)
    edges = torch.as_tensor(np.vstack(np.nonzero(a)), dtype=torch.int64)
    sr = S.spatial_regularizer(e1, edges, mode="exact", block_size=block)
    dense = S.spatial_regularizer_dense(e2, torch.as_tensor(a))
    assert sr.item() == pytest.approx(dense.item(), rel=1e-10)
    sr.backward()
    dense.backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-8, atol=1e-12)


def test_spatial_regularizer_sampled_is_unbiased():
    n = 40
    a = _random_graph(n, 0.1, 3)
    emb = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    edges = torch.as_tensor(np.vstack(np.nonzero(a)), dtype=torch.int64)
    exact = S.spatial_regularizer(emb, edges).item()
    gen = torch.Generator().manual_seed(0)
    draws = [S.spatial_regularizer(emb, edges, mode="sampled", n_negative=20, generator=gen).item() for _ in range(300)]
    assert np.mean(draws) == pytest.approx(exact, rel=0.01)
    with pytest.raises(ValueError, match="sr_mode"):
        S.spatial_regularizer(emb, edges, mode="dense")


def test_kl_uses_observed_genes_only():
    torch.manual_seed(0)
    target, mu = torch.rand(8, 6), torch.rand(8, 6)
    obs = torch.tensor([0, 2, 3])
    kl = S.kl_observed(target, mu, obs)
    mu2 = mu.clone()
    mu2[:, [1, 4, 5]] = torch.rand(8, 3)  # changing held-out genes must not change the loss
    assert S.kl_observed(target, mu2, obs).item() == pytest.approx(kl.item())
    p, q = torch.softmax(target[:, obs], 1), torch.softmax(mu[:, obs], 1)
    assert kl.item() == pytest.approx((p * (p.log() - q.log())).sum(1).mean().item(), rel=1e-5)


def test_multiview_gcn_shapes_and_attention():
    torch.manual_seed(0)
    n, g = 12, 7
    adj = torch.eye(n).to_sparse()
    out = MultiViewGCN(g, 16, 8, attention_hidden=4, decoder_hidden=16)(torch.rand(n, g), adj, adj)
    assert out["emb"].shape == (n, 8) and out["mu"].shape == (n, g)
    torch.testing.assert_close(out["attention"].sum(1), torch.ones(n))


def test_image_layout_roundtrip():
    x = torch.arange(14.0).view(2, 7)
    img = S.to_images(x, S.image_side(7))
    assert img.shape == (2, 1, 3, 3)
    assert img[0, 0, 1, 0].item() == 3.0  # gene j at pixel (j // s, j % s)
    torch.testing.assert_close(S.from_images(img, 7), x)


def test_inference_batches_never_leave_a_single_cell():
    sl = S._inference_batches(201, 100)
    assert [s.stop - s.start for s in sl] == [100, 101]
    assert math.fsum(s.stop - s.start for s in S._inference_batches(250, 100)) == 250


def test_training_loop_order_of_updates_and_history():
    """One loop for every stage: a critic update on every step, a generator update on every
    ``update_every``-th step (counted over the run) with the critic frozen, and the history
    as means over blocks of ``log_every`` steps."""
    from spatialimpute.module.training import MiniBatches, Step, train

    gen_net, critic = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    calls = []

    def generator_loss(batch):
        calls.append(("generator", batch.numel(), any(p.requires_grad for p in critic.parameters())))
        return gen_net.weight.sum() * 0 + float(len(calls))

    def critic_loss(batch):
        calls.append(("critic", batch.numel(), True))
        return critic.weight.sum() * 0 + float(len(calls))

    batches = MiniBatches(10, 4, torch.Generator().manual_seed(0), "cpu")
    hist = train(Step(lambda b: b, generator_loss, critic_loss), steps=6, batches=batches,
                 optimizer=torch.optim.SGD(gen_net.parameters(), lr=0.1), critic=critic,
                 critic_optimizer=torch.optim.SGD(critic.parameters(), lr=0.1), update_every=3, log_every=3)
    assert [c[0] for c in calls] == ["critic", "critic", "critic", "generator"] * 2
    assert all(size == 4 for _, size, _ in calls)  # 10 rows: two batches of 4 per pass
    assert not any(grad for kind, _, grad in calls if kind == "generator")  # critic frozen
    assert all(p.requires_grad for p in critic.parameters())
    assert hist["critic"] == [2.0, 6.0] and hist["generator"] == [4.0, 8.0]
    # without a critic the steps between updates are skipped
    calls.clear()
    hist = train(Step(lambda b: b, generator_loss), steps=4, batches=batches,
                 optimizer=torch.optim.SGD(gen_net.parameters(), lr=0.1), update_every=2, log_every=2)
    assert [c[0] for c in calls] == ["generator"] * 2 and hist == {"generator": [1.0, 2.0]}


def test_minibatches_cover_each_pass_once():
    from spatialimpute.module.training import MiniBatches

    batches = MiniBatches(10, 3, torch.Generator().manual_seed(0), "cpu")
    first = torch.cat([batches() for _ in range(batches.per_pass)])
    assert batches.per_pass == 3 and first.unique().numel() == 9  # the last partial batch is dropped
    assert MiniBatches(5, 100, torch.Generator(), "cpu")().numel() == 5


@pytest.mark.parametrize("map_size,levels,n_constant", [(16, 3, 8), (16, 3, 16), (64, 5, 3)])
def test_unet_core_constant_channels_equal_the_full_input(map_size, levels, n_constant):
    """Channels that are the same at every position (labels, coordinates) given as vectors:
    the same output and gradients as the full maps, without convolving them."""
    torch.manual_seed(0)
    core = UNetCore(8 + n_constant, 1, ngf=4, n_levels=levels)
    x = torch.randn(3, 8, map_size, map_size, requires_grad=True)
    k = torch.randn(3, n_constant, requires_grad=True)
    full = core(torch.cat([x, k[:, :, None, None].expand(-1, -1, map_size, map_size)], dim=1))
    folded = core(x, k)
    assert torch.allclose(full, folded, atol=1e-5)
    g_full = torch.autograd.grad(full.square().sum(), [x, k, core.down.weight])
    g_folded = torch.autograd.grad(folded.square().sum(), [x, k, core.down.weight])
    for a, b in zip(g_full, g_folded):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
