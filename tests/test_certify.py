"""gatfast.certify's interval bounds: sound on random networks built from every supported
layer (thousands of points of each ball, its corners, and projected gradient ascent on
every output and every margin stay inside), exact where the answer is known (eps = 0, a
linear layer's closed form, a one-ReLU network by hand), and refusing what it cannot bound."""

import json
import math

import pytest
import torch
from torch import nn

from gatfast import certify
from gatfast.certify.layers import Residual
from gatfast.train import models


class Affine(nn.Module):
    """A per-channel affine layer that tells certify so, like gatfast's Normalize."""

    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = torch.tensor(scale).view(1, -1, 1, 1), torch.tensor(shift).view(1, -1, 1, 1)

    def forward(self, x):
        return x * self.scale + self.shift

    def affine(self):
        return self.scale, self.shift


def _randomise_batchnorm(net, gen):
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)


def _network(kind: str, seed: int) -> nn.Module:
    """Small random networks (8x8 grey input, 5 outputs) that use every supported layer."""
    torch.manual_seed(seed)
    if kind == "cnn":
        net = nn.Sequential(
            Affine([1 / 0.3], [-0.1 / 0.3]),
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),  # nested, strided
            nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(6, 8), nn.ReLU(), nn.Identity(), nn.Linear(8, 5))
    elif kind == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12),
                            nn.ReLU(), nn.Linear(12, 5))
    elif kind == "strided":  # the certified-training CNN: strided convolutions, no pooling
        net = nn.Sequential(Affine([1 / 0.3], [-0.1 / 0.3]), nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 10),
                            nn.ReLU(), nn.Linear(10, 5))
    elif kind == "residual":  # both kinds of PreActResNet block: an identity and a convolution shortcut
        net = nn.Sequential(
            Affine([1 / 0.3], [-0.1 / 0.3]), nn.Conv2d(1, 4, 3, padding=1),
            Residual([nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(4, 4, 3, padding=1)]),
            nn.BatchNorm2d(4), nn.ReLU(),
            Residual([nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1)],
                     [nn.Conv2d(4, 6, 1, stride=2)]),
            nn.ReLU(), nn.Flatten(), nn.Linear(96, 10), nn.ReLU(), nn.Linear(10, 5))
    else:  # ends in a pooling layer: the spec goes on the output intervals
        net = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    _randomise_batchnorm(net, torch.Generator().manual_seed(seed))
    return net.eval()


def _ball_points(x, eps, norm, n, gen):
    """n points of the ball around each image, inside the [0, 1] box (corners for linf)."""
    shape = (n,) + x.shape
    if norm == "linf":
        delta = (torch.rand(shape, generator=gen) * 2 - 1) * eps
        delta[: n // 2] = torch.sign(delta[: n // 2]) * eps  # corners of the cube
    else:
        direction = torch.randn(shape, generator=gen)
        direction /= direction.flatten(2).norm(dim=2).view(n, x.shape[0], 1, 1, 1)
        radius = torch.rand(n, x.shape[0], 1, 1, 1, generator=gen) ** (1 / x[0].numel())
        radius[: n // 2] = 1.0  # the sphere itself
        delta = direction * radius * eps
    return (x + delta).clamp(0, 1)  # the box projection never leaves the ball (it is non-expansive)


def _ascend(f, x, eps, norm, steps=40):
    """Projected gradient ascent of f (one value per image) over the ball and the box."""
    x_adv = (x + (torch.rand_like(x) * 2 - 1) * eps * (1 if norm == "linf" else 1 / math.sqrt(x[0].numel())))
    x_adv = x_adv.clamp(0, 1)
    for t in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(f(x_adv).sum(), [x_adv])
        step = eps / 8 * (0.9 ** (t // 10))
        with torch.no_grad():
            if norm == "linf":
                x_adv = torch.min(torch.max(x_adv + step * g.sign(), x - eps), x + eps).clamp(0, 1)
            else:
                g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                d = x_adv + step * g - x
                d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(eps)).view(-1, 1, 1, 1)
                x_adv = (x + d).clamp(0, 1)
    return x_adv.detach()


KINDS = ("cnn", "mlp", "pool", "strided", "residual")
CASES = [(kind, norm, eps) for kind in KINDS for norm, eps in (("linf", 0.05), ("l2", 0.3))]
METHODS = ["ibp", "crown-ibp", "crown"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind,norm,eps", CASES)
def test_bounds_hold_for_every_point_of_the_ball(kind, norm, eps, method):
    net = _network(kind, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 8, 8, generator=gen)
    y = torch.tensor([0, 3, 4])
    spec = certify.margin_spec(y, 5)
    lower, upper = certify.bounds(net, x, eps, norm=norm, method=method)
    m_lower, m_upper = certify.bounds(net, x, eps, norm=norm, method=method, spec=spec)
    assert bool((lower <= upper).all()) and bool((m_lower <= m_upper).all())
    points = _ball_points(x, eps, norm, 2000, gen)
    with torch.no_grad():
        out = net(points.flatten(0, 1)).view(2000, 3, 5)
    margins = torch.einsum("nko,pno->pnk", spec, out)
    tol = 1e-5
    assert bool((out >= lower - tol).all() and (out <= upper + tol).all()), kind
    assert bool((margins >= m_lower - tol).all() and (margins <= m_upper + tol).all()), kind
    # the worst case an attack finds, on every output and every margin, both ways
    for k in range(5):
        for sign in (1, -1):
            x_adv = _ascend(lambda z: sign * net(z)[:, k], x, eps, norm)
            value = net(x_adv)[:, k]
            assert bool((value >= lower[:, k] - tol).all() and (value <= upper[:, k] + tol).all()), (k, sign)
    for k in range(4):
        x_adv = _ascend(lambda z: -torch.einsum("no,no->n", spec[:, k], net(z)), x, eps, norm)
        assert bool((torch.einsum("no,no->n", spec[:, k], net(x_adv)) >= m_lower[:, k] - tol).all()), k
    if method != "ibp":
        return
    # bounding the margins directly is never looser than subtracting the logit bounds
    subtracted = lower.gather(1, y[:, None]) - torch.stack(
        [upper[i][torch.arange(5) != y[i]] for i in range(3)])
    assert bool((m_lower >= subtracted - tol).all())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_eps_gives_the_output(kind, norm, method):
    net = _network(kind, seed=3)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    lower, upper = certify.bounds(net, x, 0.0, norm=norm, method=method)
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(lower, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(upper, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm,dual", [("linf", 1), ("l2", 2)])
def test_a_linear_layer_has_its_closed_form(norm, dual, method):
    """W x +- eps ||W_i||_dual, with x far enough from the box's faces that the box does not bite."""
    torch.manual_seed(5)
    layer = nn.Linear(10, 3)
    x = 0.4 + 0.2 * torch.rand(2, 10)
    lower, upper = certify.bounds(layer, x, 0.05, norm=norm, method=method)
    centre = layer(x).detach()
    radius = 0.05 * layer.weight.detach().norm(p=dual, dim=1)
    torch.testing.assert_close(lower, centre - radius)
    torch.testing.assert_close(upper, centre + radius)
    # with the margins as the spec: (C W) x +- eps ||(C W)_k||_dual, one bound per margin
    spec = certify.margin_spec(torch.tensor([2, 0]), 3)
    m_lower, _ = certify.bounds(layer, x, 0.05, norm=norm, method=method, spec=spec)
    merged = torch.einsum("nko,oi->nki", spec, layer.weight.detach())
    torch.testing.assert_close(m_lower, torch.einsum("nko,no->nk", spec, centre) - 0.05 * merged.norm(p=dual, dim=2))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm,dual", [("linf", 1), ("l2", 2)])
@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_one_affine_and_one_weighted_layer_are_bounded_exactly(layer, norm, dual, method):
    """An affine layer and then one Conv2d (strided) or Flatten + Linear is a linear map, so
    its exact range over the ball is out(x) +- eps ||grad||_dual per output: the bound must
    equal it (for the conv's L2 bound, at outputs whose kernel lies inside the image).
    This is what catches a radius that is too small, which sampling a loose bound cannot."""
    torch.manual_seed(7)
    body = [nn.Conv2d(2, 3, 3, stride=2, padding=1)] if layer == "conv" else [nn.Flatten(), nn.Linear(2 * 64, 4)]
    net = nn.Sequential(Affine([2.0, -0.5], [0.1, -0.2]), *body).eval()
    x = 0.4 + 0.2 * torch.rand(1, 2, 8, 8)
    eps = 0.02
    lower, upper = certify.bounds(net, x, eps, norm=norm, method=method)
    out = net(x).detach()
    units = [(c, i, j) for c in range(3) for i in (1, 2) for j in (1, 3)] if layer == "conv" else \
        [(k,) for k in range(4)]
    for unit in units:
        x_in = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x_in)[(0,) + unit], [x_in])
        reach = eps * grad.norm(p=dual)
        assert upper[(0,) + unit].item() == pytest.approx((out[(0,) + unit] + reach).item(), abs=1e-5)
        assert lower[(0,) + unit].item() == pytest.approx((out[(0,) + unit] - reach).item(), abs=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_crown_ibp_keeps_what_intervals_lose(norm):
    """relu(x) - relu(x) is 0 everywhere: CROWN-IBP's linear bounds cancel exactly (both
    units are active on the ball), while IBP's intervals add up to [-0.5, 0.5]."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0), net[0].bias.zero_(), net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].bias.zero_()
    x = torch.tensor([[0.5]])
    lower, upper = certify.bounds(net, x, 0.25, norm=norm, method="crown-ibp")
    assert lower.item() == pytest.approx(0.0, abs=1e-6) and upper.item() == pytest.approx(0.0, abs=1e-6)
    lower, upper = certify.bounds(net, x, 0.25, norm=norm, method="ibp")
    assert lower.item() == pytest.approx(-0.5) and upper.item() == pytest.approx(0.5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_crown_tightens_the_relu_inputs_that_crown_ibp_takes_from_intervals(norm):
    """relu(x) - relu(x) + 0.1 feeds a second ReLU: IBP gives its input [-0.4, 0.6] (an
    unstable unit, relaxed), CROWN bounds it to exactly 0.1 (stable), so CROWN's output
    bound is the exact 3 * 0.1 where CROWN-IBP's is looser."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0), net[0].bias.zero_(), net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].bias.fill_(0.1), net[4].weight.fill_(3.0), net[4].bias.zero_()
    x = torch.tensor([[0.5]])
    lower, upper = certify.bounds(net, x, 0.25, norm=norm, method="crown")
    assert lower.item() == pytest.approx(0.3, abs=1e-6) and upper.item() == pytest.approx(0.3, abs=1e-6)
    lower, upper = certify.bounds(net, x, 0.25, norm=norm, method="crown-ibp")
    assert lower.item() < 0.3 - 0.1 or upper.item() > 0.3 + 0.1


@pytest.mark.parametrize("layer", [nn.Linear(12, 5), nn.Conv2d(3, 4, 3, stride=2, padding=1),
                                   nn.Conv2d(3, 4, 4, stride=2, padding=1), nn.Conv2d(3, 2, 2, stride=3),
                                   nn.Conv2d(3, 6, 3, padding=2, dilation=2, groups=3),
                                   models.Normalize((0.1, 0.2, 0.3), (0.5, 0.4, 0.3)), nn.Flatten()],
                         ids=["linear", "conv-s2", "conv-k4", "conv-s3-odd", "conv-dilated-grouped", "normalize",
                              "flatten"])
def test_each_backward_rule_is_the_layers_vector_jacobian_product(layer):
    """CROWN's written-out backward rules (a transposed convolution, A W, A scale) against
    autograd's vector-Jacobian product on the same layer, sizes that leave a remainder
    included; and both keep the graph to the layer's weights (certified training)."""
    from gatfast.certify import crown
    torch.manual_seed(11)
    in_shape = (12,) if isinstance(layer, nn.Linear) else (3, 7, 9)
    out_shape = tuple(layer(torch.zeros((1,) + in_shape)).shape[1:])
    a = torch.randn((2, 3) + out_shape)
    b = torch.randn(2, 3)
    written = crown._through_affine(layer, a, b, in_shape)
    generic = crown._through_vjp(layer, a, b, in_shape)
    for mine, theirs in zip(written, generic):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    params = [p for p in layer.parameters()]
    if params:
        (grad,) = torch.autograd.grad(written[0].sum() + written[1].sum(), params[:1])
        (expected,) = torch.autograd.grad(generic[0].sum() + generic[1].sum(), params[:1])
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_the_bounds_are_differentiable_in_the_weights(method):
    """Certified training backpropagates through the bounds: finite gradients reach every
    weight, and a step against the margin bound's gradient raises that bound."""
    net = _network("strided", seed=12).train()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(13))
    spec = certify.margin_spec(torch.tensor([0, 1, 2, 3]), 5)
    lower = certify.bounds(net, x, 0.05, method=method, spec=spec)[0]
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(lower.sum(), params)
    assert all(bool(torch.isfinite(g).all()) for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(1e-3 * g)
        assert float(certify.bounds(net, x, 0.05, method=method, spec=spec)[0].sum()) > float(lower.sum())


@pytest.mark.parametrize("norm,dual", [("linf", 1), ("l2", 2)])
def test_the_linear_bounds_follow_the_shortcut_that_intervals_add(norm, dual):
    """x -> W x + b + x: CROWN-IBP and CROWN bound the block's sum as the one linear map it is
    (W + I), exactly; IBP adds the two paths' intervals, eps (||W_i|| + 1), which is looser."""
    torch.manual_seed(21)
    lin = nn.Linear(6, 6)
    with torch.no_grad():  # a negative diagonal, so that W + I has smaller rows than |W| + 1 (strictly)
        lin.weight -= torch.diag(lin.weight.diag().abs() + 0.1)
    net = nn.Sequential(Residual([lin]))
    x = torch.full((2, 6), 0.5) + torch.rand(2, 6) * 0.1  # inside the box by more than eps
    eps = 0.05
    with torch.no_grad():
        out = net(x)
        exact = eps * (lin.weight + torch.eye(6)).norm(p=dual, dim=1)
        added = eps * (lin.weight.norm(p=dual, dim=1) + 1)
        for method in ("crown-ibp", "crown"):
            lower, upper = certify.bounds(net, x, eps, norm=norm, method=method)
            torch.testing.assert_close(lower, out - exact, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(upper, out + exact, atol=1e-5, rtol=1e-5)
        lower, upper = certify.bounds(net, x, eps, norm=norm, method="ibp")
        if norm == "linf":  # under L2 the shortcut (no weights) is bounded by the ball's box: looser still
            torch.testing.assert_close(lower, out - added, atol=1e-5, rtol=1e-5)
        assert bool((lower < out - exact - 1e-4).all())


@pytest.mark.parametrize("name,kwargs", [("preact_resnet18", {}), ("wide_resnet", {"depth": 10, "widen": 1})])
def test_the_resnets_are_read_as_chains_of_residual_blocks_and_bounded_soundly(name, kwargs):
    """The ResNets in eval mode (BatchNorm with random statistics) equal the chain certify
    reads, and their CROWN-IBP margin bounds hold at sampled points and PGD's worst case."""
    net = models.build_model(name, **kwargs)
    _randomise_batchnorm(net, torch.Generator().manual_seed(22))
    net.eval()
    gen = torch.Generator().manual_seed(23)
    x = torch.rand(2, 3, 16, 16, generator=gen)  # 16x16 for time: the global pooling takes any size
    with torch.no_grad():
        torch.testing.assert_close(nn.Sequential(*certify.chain(net))(x), net(x), atol=1e-4, rtol=1e-4)
        y = net(x).argmax(1)
    blocks = [m for m in certify.chain(net) if isinstance(m, Residual)]
    assert len(blocks) == (8 if name == "preact_resnet18" else 3)
    assert any(len(b.shortcut) == 0 for b in blocks) and any(len(b.shortcut) == 1 for b in blocks)
    spec = certify.margin_spec(y, 10)
    eps = 1e-3
    lower, upper = certify.bounds(net, x, eps, method="crown-ibp", spec=spec)
    ibp_lower, _ = certify.bounds(net, x, eps, method="ibp", spec=spec)
    assert bool((lower <= upper).all())
    with torch.no_grad():
        points = _ball_points(x, eps, "linf", 32, gen)
        margins = torch.einsum("nko,pno->pnk", spec, net(points.flatten(0, 1)).view(32, 2, 10))
    assert bool((margins >= lower - 1e-4).all() and (margins <= upper + 1e-4).all())
    x_adv = _ascend(lambda z: -torch.einsum("no,no->n", spec[:, 0], net(z)), x, eps, "linf", steps=10)
    with torch.no_grad():
        assert bool((torch.einsum("no,no->n", spec[:, 0], net(x_adv)) >= lower[:, 0] - 1e-4).all())
    assert bool((lower >= ibp_lower - 1e-4).mean(dtype=torch.float) > 0.5)  # CROWN-IBP mostly the tighter


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", KINDS)
def test_lower_bounds_give_both_bounds_from_one_pass(kind, norm):
    """crown.lower_bounds, what certified training and verified accuracy call, equals the
    separate IBP, CROWN-IBP and CROWN lower bounds."""
    net = _network(kind, seed=24)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(25))
    spec = certify.margin_spec(torch.tensor([0, 2, 4]), 5)
    eps = 0.05 if norm == "linf" else 0.3
    with torch.no_grad():
        for full, method in ((False, "crown-ibp"), (True, "crown")):
            linear, interval = certify.crown.lower_bounds(net, x, eps, spec, norm=norm, full=full)
            torch.testing.assert_close(interval, certify.bounds(net, x, eps, norm=norm, method="ibp", spec=spec)[0])
            torch.testing.assert_close(linear, certify.bounds(net, x, eps, norm=norm, method=method, spec=spec)[0])


def test_a_one_relu_network_by_hand():
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(2.0), net[0].bias.fill_(-1.0), net[2].weight.fill_(-3.0), net[2].bias.fill_(0.5)
    # x in [0.25, 0.75]: pre-activation in [-0.5, 0.5], ReLU in [0, 0.5], output in [-1.0, 0.5]
    lower, upper = certify.bounds(net, torch.tensor([[0.5]]), 0.25)
    assert lower.item() == pytest.approx(-1.0) and upper.item() == pytest.approx(0.5)
    # the box: x = 0.1, eps 0.25 gives x in [0, 0.35]: pre-activation [-1, -0.3], ReLU 0, output 0.5
    lower, upper = certify.bounds(net, torch.tensor([[0.1]]), 0.25)
    assert lower.item() == pytest.approx(0.5) and upper.item() == pytest.approx(0.5)


def test_the_small_cnn_is_read_as_its_chain_and_verified_images_resist_attack(tmp_path):
    """A briefly trained SmallCNN on mnist5k: IBP verifies some test images at a tiny eps
    (45 of 200 at 1e-4), and PGD breaks none of those (a certificate is a lower bound)."""
    from gatfast import attacks, train
    from gatfast.train import data
    train.train(train.TrainConfig(dataset="mnist5k", method="standard", epochs=1, train_size=1000, batch_size=50,
                                  eval_pgd_steps=0, progress=False), tmp_path, log=lambda *_: None)
    model = train.load_run(tmp_path).classifier
    x, y = (t[:200] for t in data.load_dataset("mnist5k").test.tensors)
    with torch.no_grad():
        torch.testing.assert_close(model.as_sequential()(x), model(x))
        right = model(x).argmax(1) == y
    assert [type(m) for m in certify.chain(model)][:2] == [models.Normalize, nn.Conv2d]
    assert certify.verified_accuracy(model, x, y, 0.0) == float(right.float().mean())  # eps 0: the correct ones
    eps = 1e-4  # IBP is loose on a network not trained for it: at 3e-4 it verified none of 200 images
    by_ibp = certify.verified(model, x, y, eps, method="ibp")
    verified = certify.verified(model, x, y, eps)  # the larger of IBP's and CROWN-IBP's bound
    assert bool(verified[by_ibp].all())
    assert 0 < int(verified.sum()) <= int(right.sum())
    x_adv = attacks.PGD(model, eps=eps, steps=50)(x, y)
    with torch.no_grad():
        survived = model(x_adv).argmax(1) == y
    assert bool(survived[verified].all())
    assert certify.verified_accuracy(model, x, y, 0.3) == 0.0  # IBP on an undefended CNN at 0.3: nothing


def test_what_cannot_be_bounded_is_refused():
    with pytest.raises(TypeError, match="cannot bound a Tanh; it bounds Linear, Conv2d"):
        certify.bounds(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), torch.rand(1, 4), 0.1)
    bn = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(TypeError, match="BatchNorm1d in training mode"):
        certify.bounds(bn, torch.rand(2, 4), 0.1)
    with pytest.raises(ValueError, match="eps must be"):
        certify.bounds(nn.Linear(4, 2), torch.rand(1, 4), -0.1)
    with pytest.raises(ValueError, match="norm must be"):
        certify.bounds(nn.Linear(4, 2), torch.rand(1, 4), 0.1, norm="l1")
    with pytest.raises(ValueError, match="spec must be a tensor of shape"):
        certify.bounds(nn.Linear(4, 2), torch.rand(1, 4), 0.1, spec=torch.ones(2, 1))
    with pytest.raises(ValueError, match="method must be one of ibp, crown-ibp, crown"):
        certify.verified(nn.Linear(4, 2), torch.rand(1, 4), torch.tensor([0]), 0.1, method="nonsense")
    with pytest.raises(TypeError, match="cannot bound a MaxPool2d inside a Residual block"):
        certify.bounds(Residual([nn.MaxPool2d(1)]), torch.rand(1, 1, 4, 4), 0.1)
    with pytest.raises(TypeError, match="BatchNorm2d in training mode"):
        certify.bounds(models.WideResNet(depth=10, widen=1).train(), torch.rand(2, 3, 32, 32), 0.1)
    wide = nn.Sequential(nn.Flatten(), nn.Linear(4, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 2))
    with pytest.raises(ValueError, match="full CROWN would bound 30 units .* past max_rows=20: use crown-ibp"):
        certify.crown.crown_bounds(wide, torch.rand(1, 4), 0.1, max_rows=20)


def test_the_certify_command_writes_certify_json(tmp_path, capsys):
    from gatfast import cli, train
    run = tmp_path / "run"
    train.train(train.TrainConfig(dataset="digits", method="standard", epochs=2, eps=0.1, eval_pgd_steps=0,
                                  progress=False), run, log=lambda *_: None)
    assert cli.main(["certify", str(run), "--eps", "0,0.001,0.1", "--n", "100", "--method", "crown-ibp",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "crown-ibp bounds, linf ball, first 100 test images" in out and "wrote" in out
    report = json.loads((run / "certify.json").read_text())
    assert [r["eps"] for r in report["rows"]] == [0.0, 0.001, 0.1] and report["n"] == 100
    verified = [r["verified"] for r in report["rows"]]
    assert verified[0] == pytest.approx(report["clean"])  # eps 0: exactly the correctly classified images
    assert verified[0] >= verified[1] >= verified[2]
    # without --eps: the run's own
    assert cli.main(["certify", str(run), "--n", "20", "--method", "ibp"]) == 0
    assert [r["eps"] for r in json.loads((run / "certify.json").read_text())["rows"]] == [0.1]


def test_the_certify_command_smooths_an_l2_run(tmp_path, capsys):
    from gatfast import cli, train
    run = tmp_path / "run"
    train.train(train.TrainConfig(dataset="digits", method="gaussian", norm="l2", eps=0.5, sigma=0.25, epochs=3,
                                  eval_pgd_steps=0, progress=False), run, log=lambda *_: None)
    assert cli.main(["certify", str(run), "--eps", "0.1", "--n", "50", "--smoothing-images", "20", "--smoothing-n",
                     "500", "--radii", "0,0.1,0.5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "randomized smoothing, sigma 0.25, n 500" in out and "first 20 test images" in out
    smoothing = json.loads((run / "certify.json").read_text())["smoothing"]
    assert smoothing["sigma"] == 0.25 and smoothing["images"] == 20 and smoothing["n"] == 500
    certified = [r["certified"] for r in smoothing["rows"]]
    assert [r["radius"] for r in smoothing["rows"]] == [0.0, 0.1, 0.5]
    assert 0.5 <= certified[0] and certified[0] >= certified[1] >= certified[2]  # a trained model, radii growing
    # --smoothing-n 0: no smoothing
    assert cli.main(["certify", str(run), "--eps", "0.1", "--n", "20", "--smoothing-n", "0"]) == 0
    assert "smoothing" not in json.loads((run / "certify.json").read_text())


# ---- randomized smoothing ---------------------------------------------------------------------

def _linear_binary(dim=20, seed=14):
    """class 1 where w . x + b > 0: its smoothed prediction is known in closed form, with
    P(f(x + noise) = 1) = Phi((w . x + b) / (sigma ||w||))."""
    gen = torch.Generator().manual_seed(seed)
    w, b = torch.randn(dim, generator=gen), 0.3
    model = nn.Sequential(nn.Flatten(), nn.Linear(dim, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(dim), w]))
        model[1].bias.copy_(torch.tensor([0.0, b]))
    on_boundary = -b * w / w.dot(w)
    return model, w / w.norm(), on_boundary


def test_smoothing_certifies_a_linear_classifiers_distance_to_its_boundary():
    """The certified radius is sigma * Phi^-1 of the Clopper-Pearson bound on the count of
    n draws: it must lie where the count's 99.9% binomial range puts it, never beyond the
    true distance to the boundary, and a point on the boundary abstains."""
    from scipy.stats import binom, norm as normal
    from gatfast.certify import smoothing
    model, unit, base = _linear_binary()
    distances = torch.tensor([0.05, 0.2, 0.4, 0.7])
    x = torch.stack([base + d * unit for d in distances] + [base]).view(5, 1, 4, 5)
    y = torch.ones(5, dtype=torch.long)
    sigma, n, alpha = 0.5, 10_000, 0.001
    result = certify.smoothed_certify(model, x, y, sigma, n0=100, n=n, alpha=alpha, seed=3, progress=False)
    assert int(result.prediction[4]) == smoothing.ABSTAIN and float(result.radius[4]) == 0.0
    for i, d in enumerate(distances.tolist()):
        p = float(normal.cdf(d / sigma))
        low, high = (smoothing.radius_of_probability(smoothing._lower_confidence_bound(int(k), n, alpha), sigma)
                     for k in binom.ppf([0.0005, 0.9995], n, p))
        assert int(result.prediction[i]) == 1
        assert low - 1e-9 <= float(result.radius[i]) <= high + 1e-9, (d, low, float(result.radius[i]), high)
        assert float(result.radius[i]) <= d
    assert result.accuracy_at(0.0) == pytest.approx(0.8) and result.accuracy_at(0.5) == pytest.approx(0.2)
    again = certify.smoothed_certify(model, x, y, sigma, n0=100, n=n, alpha=alpha, seed=3, progress=False)
    assert torch.equal(again.radius, result.radius)  # seeded: a certificate can be reproduced
    wrong = certify.smoothed_certify(model, x[:1], torch.tensor([0]), sigma, n=1000, progress=False)
    assert not bool(wrong.correct[0]) and wrong.accuracy_at(0.0) == 0.0


def test_smoothing_refuses_bad_settings():
    model, _, _ = _linear_binary()
    x, y = torch.rand(2, 1, 4, 5), torch.tensor([0, 1])
    for kwargs, word in (({"sigma": 0}, "sigma"), ({"n0": 0}, "n0"), ({"n": 1.5}, "n"), ({"alpha": 0.5}, "alpha"),
                         ({"alpha": 0}, "alpha"), ({"seed": -1}, "seed"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises((TypeError, ValueError), match=word):
            certify.smoothed_certify(model, x, y, **{"sigma": 0.25, **kwargs})


# ---- certified training -----------------------------------------------------------------------

def test_the_robust_loss_bounds_the_cross_entropy_over_the_whole_ball():
    """CROWN-IBP's robust term, CE of the worst-case logits the margin bounds allow, is at
    least the cross-entropy at every sampled point of the ball (it bounds it from above)."""
    import torch.nn.functional as F
    from gatfast.train import methods
    net = _network("strided", seed=15).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(16)
    x, y = torch.rand(6, 1, 8, 8, generator=gen), torch.tensor([0, 1, 2, 3, 4, 0])
    for name, eps in (("crown_ibp", 0.02), ("ibp", 0.02), ("crown_ibp", 0.0)):
        method = methods.METHODS[name](net, opt, eps=eps if eps else 0.1)
        method.set_eps(eps if eps else 1e-12)
        method.kappa = (0.0, 0.0)  # the robust term alone
        if name == "crown_ibp":
            method.beta = (1.0, 1.0)  # CROWN-IBP's bound alone
        loss, metrics = method._loss(x, y)
        points = _ball_points(x, eps, "linf", 200, gen)
        with torch.no_grad():
            ce = F.cross_entropy(net(points.flatten(0, 1)), y.repeat(200), reduction="none").view(200, 6)
        # the loss is the batch mean: each image's own robust term bounds that image's CE
        assert float(loss.detach()) >= float(ce.mean(1).max()) - 1e-5, name
        assert float(metrics["loss_robust"]) == pytest.approx(float(loss.detach()))


def test_kappa_and_beta_move_with_the_eps_ramp():
    from gatfast.train import methods
    net = _network("strided", seed=17)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    crown_ibp = methods.CROWNIBP(net, opt, eps=0.2)
    assert crown_ibp.weights() == (0.0, 0.0)  # at the final eps: the schedules' ends
    crown_ibp.set_eps(0.05)
    assert crown_ibp.weights() == pytest.approx((0.75, 0.75))
    ibp_method = methods.IBP(net, opt, eps=0.2, kappa=(1.0, 0.2))
    ibp_method.set_eps(0.1)
    assert ibp_method.weights() == pytest.approx((0.6, 0.0))
    with pytest.raises(TypeError, match="classifier: certify cannot bound a Tanh"):
        methods.CROWNIBP(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), opt, eps=0.1)
