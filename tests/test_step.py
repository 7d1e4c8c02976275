"""The fused GAT step against the same simultaneous update in plain autograd (float64,
CPU), for every generator input and bound, several alphas and c_g; BatchNorm; bad config."""

import copy

import pytest
import torch
from torch import nn

import gatfast
from gatfast.gat import generators, reference
from gatfast.gat.generators import PerturbationGenerator
from gatfast.gat.step import GATStep
from conftest import float64_backends

EPS = 0.3


def tiny_classifier(batchnorm=False):
    layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if batchnorm else []) + [
        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)]
    return nn.Sequential(*layers).double()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g)


def networks(bound, input_kind, batchnorm=False, seed=0):
    torch.manual_seed(seed)
    gen = PerturbationGenerator(1, EPS, bound=bound, input=input_kind, width=4, blocks=1).double()
    with torch.no_grad():
        gen.tail.weight.mul_(20)  # a generator that perturbs enough to matter
    return tiny_classifier(batchnorm), gen


def step_with_reference(clf, gen, x, y, norm, alpha, c_g, lr=0.1, generator_steps=1):
    grads_c, grads_g = reference.gat_gradients_simultaneous(clf, gen, x, y, EPS, norm, alpha, c_g, generator_steps)
    with torch.no_grad():
        for module, grads in ((clf, grads_c), (gen, grads_g)):
            for p, gr in zip([p for p in module.parameters() if p.requires_grad], grads):
                if gr is not None:
                    p -= lr * gr


def _perturb_norm(bound):
    return None if bound == "penalty" else bound


class _GradientNet(nn.Module):
    """A user's own generator that reads the image and the input gradient: G(x, grad)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x, grad):
        return 0.5 * torch.tanh(self.conv(torch.cat([x, grad / grad.abs().amax().clamp_min(1e-12)], 1)))


def _image_net():
    """A plain nn.Sequential generator of the image alone, declared as such."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1))
    net.reads_gradient = False
    return net


@pytest.mark.parametrize("make_generator", [_GradientNet, _image_net], ids=["own-image+grad", "sequential-image"])
@pytest.mark.parametrize("generator_steps", [1, 2])
def test_own_generator_trains_like_the_plain_simultaneous_update(make_generator, generator_steps):
    torch.manual_seed(0)
    clf, gen = tiny_classifier(), make_generator().double()
    clf_ref, gen_ref, gen_start = copy.deepcopy(clf), copy.deepcopy(gen), copy.deepcopy(gen)
    x, y = batch()
    step = GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
                   eps=EPS, norm="linf", alpha=0.5, c_g=0.1, generator_steps=generator_steps)
    for _ in range(2):
        step.step(x, y)
        step_with_reference(clf_ref, gen_ref, x, y, "linf", 0.5, 0.1, generator_steps=generator_steps)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert sum((a - b).abs().sum() for a, b in zip(gen.parameters(), gen_start.parameters())) > 0


def test_own_generator_of_the_wrong_shape_is_named():
    clf = tiny_classifier()
    gen = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    gen.reads_gradient = False
    step = GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
                   eps=EPS)
    with pytest.raises(ValueError, match=r"generator must return a perturbation of the input's shape \(6, 1, 8, 8\)"):
        step.step(*batch())


@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize("input_kind", generators.INPUTS)
@pytest.mark.parametrize("bound", generators.BOUNDS)
@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("c_g", [0.0, 0.7])
def test_fused_step_equals_plain_simultaneous_update(backend, input_kind, bound, alpha, c_g):
    clf, gen = networks(bound, input_kind)
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch()
    norm = "l2" if bound == "l2" else "linf"
    step = GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
                   eps=EPS, norm=norm, alpha=alpha, c_g=c_g)
    with gatfast.use_backend(backend):
        metrics = step.step(x, y)
    step_with_reference(clf_ref, gen_ref, x, y, _perturb_norm(bound), alpha, c_g)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    moved = sum((a - b).abs().sum() for a, b in zip(gen.parameters(), networks(bound, input_kind)[1].parameters()))
    assert moved > 0  # the generator really was updated
    assert set(metrics) == {"loss_classifier", "loss_generator", "acc_clean", "acc_adv", "perturbation_norm"}
    assert all(v.dim() == 0 for v in metrics.values())


@pytest.mark.parametrize("input_kind", generators.INPUTS)
@pytest.mark.parametrize("bound", generators.BOUNDS)
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_multi_step_generator_equals_plain_update(input_kind, bound, alpha):
    """generator_steps=3: G applied at x_0, x_1, x_2 with fresh input gradients; the
    generator's gradient flows through all three outputs, sign-flipped once."""
    clf, gen = networks(bound, input_kind)
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch(4)
    norm = "l2" if bound == "l2" else "linf"
    step = GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
                   eps=EPS, norm=norm, alpha=alpha, c_g=0.3, generator_steps=3)
    step.step(x, y)
    step_with_reference(clf_ref, gen_ref, x, y, _perturb_norm(bound), alpha, 0.3, generator_steps=3)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("bound", generators.BOUNDS)
def test_random_start_equals_plain_update(bound):
    """random_init: x_0 is a random point of the ball (same draws for both: same seed)."""
    clf, gen = networks(bound, "image+grad")
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch(6)
    norm = "l2" if bound == "l2" else "linf"
    step = GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
                   eps=EPS, norm=norm, alpha=0.5, c_g=0.3, generator_steps=2, random_init=True)
    torch.manual_seed(11)
    step.step(x, y)
    torch.manual_seed(11)
    grads_c, grads_g = reference.gat_gradients_simultaneous(clf_ref, gen_ref, x, y, EPS, _perturb_norm(bound), 0.5,
                                                            0.3, 2, random_init=True)
    with torch.no_grad():
        for module, grads in ((clf_ref, grads_c), (gen_ref, grads_g)):
            for p, gr in zip(module.parameters(), grads):
                p -= 0.1 * gr
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_generator_updates_run_generator_only_steps_first():
    """generator_updates=3: two generator-only updates (plain autograd of L_G), then the
    simultaneous update; the classifier moves once, at the end."""
    clf, gen = networks("linf", "image+grad")
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch(5)
    GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
            eps=EPS, alpha=0.5, c_g=0.2, generator_updates=3).step(x, y)
    for _ in range(2):
        _, grads_g = reference.gat_gradients_simultaneous(clf_ref, gen_ref, x, y, EPS, "linf", 0.5, 0.2)
        with torch.no_grad():
            for p, gr in zip(gen_ref.parameters(), grads_g):
                p -= 0.1 * gr
    step_with_reference(clf_ref, gen_ref, x, y, "linf", 0.5, 0.2)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_half_resolution_generator_in_the_step():
    """resolution='half' (stride-2 body, transposed-conv tail, 1x1 pixel path) through the
    fused step equals the plain update too; odd image sides are refused."""
    torch.manual_seed(0)
    clf = tiny_classifier()
    gen = PerturbationGenerator(1, EPS, input="image+grad", width=4, blocks=1, resolution="half").double()
    with torch.no_grad():
        gen.tail.weight.mul_(20)
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch(7)
    assert gen(x, torch.randn_like(x)).shape == x.shape
    GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
            eps=EPS, alpha=0.5, generator_steps=2).step(x, y)
    step_with_reference(clf_ref, gen_ref, x, y, "linf", 0.5, 0.0, generator_steps=2)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="needs even image sides"):
        gen(torch.rand(2, 1, 7, 7, dtype=torch.float64), torch.rand(2, 1, 7, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="resolution must be 'full' or 'half'"):
        PerturbationGenerator(1, EPS, resolution="quarter")


def test_latent_code_makes_perturbations_differ_per_call():
    torch.manual_seed(0)
    gen = PerturbationGenerator(1, EPS, input="image+grad", width=4, blocks=1, latent_dim=4).double()
    with torch.no_grad():
        gen.tail.weight.mul_(20)
    x, _ = batch()
    g = torch.randn_like(x)
    a, b = gen(x, g), gen(x, g)
    assert a.abs().max() <= EPS and (a - b).abs().max() > 1e-3
    assert gen.head.in_channels == 2 + 4


def test_batchnorm_running_statistics_see_both_passes():
    """Each step runs the classifier twice in training mode: the clean batch, then the
    adversarial one; the running statistics match the plain algorithm's."""
    clf, gen = networks("linf", "image+grad", batchnorm=True)
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch(1)
    GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
            eps=EPS, alpha=0.5, c_g=0.1).step(x, y)
    step_with_reference(clf_ref, gen_ref, x, y, "linf", 0.5, 0.1)
    bn, bn_ref = clf[1], clf_ref[1]
    assert int(bn.num_batches_tracked) == 2
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)
    for a, b in zip(clf.parameters(), clf_ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize("bound", generators.BOUNDS)
@pytest.mark.parametrize("alpha", [0.25, 0.5])
@pytest.mark.parametrize("c_g", [0.0, 0.7])
def test_single_pass_step_equals_plain_simultaneous_update(backend, bound, alpha, c_g):
    """One forward over cat(x, x_adv) and one backward of the fused loss give the plain
    algorithm's update (no BatchNorm), and the same metrics as the two-pass step."""
    clf, gen = networks(bound, "image")
    clf_ref, gen_ref = copy.deepcopy(clf), copy.deepcopy(gen)
    clf_two, gen_two = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch()
    norm = "l2" if bound == "l2" else "linf"

    def make(c, g, single_pass):
        return GATStep(c, g, torch.optim.SGD(c.parameters(), lr=0.1), torch.optim.SGD(g.parameters(), lr=0.1),
                       eps=EPS, norm=norm, alpha=alpha, c_g=c_g, single_pass=single_pass)

    with gatfast.use_backend(backend):
        metrics = make(clf, gen, True).step(x, y)
        metrics_two = make(clf_two, gen_two, False).step(x, y)
    step_with_reference(clf_ref, gen_ref, x, y, _perturb_norm(bound), alpha, c_g)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()),
                    list(clf_ref.parameters()) + list(gen_ref.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert set(metrics) == set(metrics_two)
    for name in metrics:
        torch.testing.assert_close(metrics[name].double(), metrics_two[name].double(), atol=1e-12, rtol=1e-10)


def test_single_pass_normalises_clean_and_adversarial_halves_together():
    """With BatchNorm the single pass is a different model: the running statistics see
    the mixed batch once (num_batches_tracked 1, not 2)."""
    clf, gen = networks("linf", "image", batchnorm=True)
    x, y = batch(1)
    GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
            eps=EPS, alpha=0.5, single_pass=True).step(x, y)
    assert int(clf[1].num_batches_tracked) == 1


def test_single_pass_refuses_what_it_cannot_do():
    clf, gen = networks("linf", "image+grad")
    opts = (torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="single_pass=True needs a generator with input='image'"):
        GATStep(clf, gen, *opts, eps=EPS, single_pass=True)
    clf, gen = networks("linf", "image")
    with pytest.raises(ValueError, match="single_pass=True needs alpha < 1"):
        GATStep(clf, gen, *opts, eps=EPS, alpha=1.0, single_pass=True)


def test_literal_algorithm_runs_and_updates_both():
    clf, gen = networks("linf", "grad")
    before = [p.clone() for p in list(clf.parameters()) + list(gen.parameters())]
    x, y = batch(2)
    out = reference.gat_step_literal(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1),
                                     torch.optim.SGD(gen.parameters(), lr=0.1), x, y, EPS, "linf", 0.5, 0.0)
    after = list(clf.parameters()) + list(gen.parameters())
    assert all((a - b).abs().sum() > 0 for a, b in zip(after, before))
    assert torch.isfinite(out["loss_classifier"]) and torch.isfinite(out["loss_generator"])


def test_bad_step_configuration():
    clf, gen = networks("linf", "grad")
    opts = (torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="norm 'l2' does not match the generator's bound 'linf'"):
        GATStep(clf, gen, *opts, eps=EPS, norm="l2")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        GATStep(clf, gen, *opts, eps=EPS, alpha=1.5)
    with pytest.raises(ValueError, match="c_g must be >= 0"):
        GATStep(clf, gen, *opts, eps=EPS, c_g=-1)
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        GATStep(clf, gen, *opts, eps=0)
    with pytest.raises(ValueError, match="generator_steps must be >= 1"):
        GATStep(clf, gen, *opts, eps=EPS, generator_steps=0)
    with pytest.raises(TypeError, match="generator_updates must be an int"):
        GATStep(clf, gen, *opts, eps=EPS, generator_updates=1.5)
    with pytest.raises(TypeError, match="generator must be a torch.nn.Module"):
        GATStep(clf, lambda x, g: g, *opts, eps=EPS)
    step = GATStep(clf, gen, *opts, eps=EPS)
    with pytest.raises(ValueError, match="y must be int64 class labels of shape"):
        step.step(batch()[0], torch.zeros(6))


def _float_networks(seed=0):
    clf, gen = networks("linf", "image+grad", seed=seed)
    return clf.float(), gen.float()


def _update(amp, seed=0, scaler=None):
    clf, gen = _float_networks(seed)
    before = torch.cat([p.detach().flatten().clone() for p in clf.parameters()])
    x, y = batch(3)
    step = GATStep(clf, gen, torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1),
                   eps=EPS, alpha=0.5, amp=amp, grad_scaler=scaler)
    metrics = step.step(x.float(), y)
    after = torch.cat([p.detach().flatten() for p in clf.parameters()])
    return after - before, metrics, step


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_step_follows_the_float32_step(amp):
    reference_update, _, _ = _update(None)
    update, metrics, _ = _update(amp)
    assert torch.isfinite(update).all() and all(torch.isfinite(v) for v in metrics.values())
    cosine = torch.nn.functional.cosine_similarity(update, reference_update, dim=0)
    assert cosine > 0.98, float(cosine)
    assert 0.8 < float(update.norm() / reference_update.norm()) < 1.25  # the fp16 scale was undone


def test_fp16_overflow_skips_the_step_and_shrinks_the_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    update, _, step = _update("fp16", scaler=scaler)
    assert update.abs().max() == 0  # both optimisers skipped
    assert step.grad_scaler.get_scale() == 2.0**99


def test_bad_amp_configuration():
    clf, gen = _float_networks()
    opts = (torch.optim.SGD(clf.parameters(), lr=0.1), torch.optim.SGD(gen.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="amp must be None, 'bf16' or 'fp16'"):
        GATStep(clf, gen, *opts, eps=EPS, amp="fp8")
    with pytest.raises(ValueError, match="grad_scaler is for amp='fp16' only"):
        GATStep(clf, gen, *opts, eps=EPS, amp="bf16", grad_scaler=torch.amp.GradScaler("cpu"))


def test_compiled_step_matches_eager():
    """torch.compile of the whole step (graph breaks allowed: autograd.grad and the
    optimisers run between graphs) gives the eager step's updates over two steps."""
    torch._dynamo.reset()
    clf, gen = _float_networks()
    clf2, gen2 = copy.deepcopy(clf), copy.deepcopy(gen)
    x, y = batch(3)
    x = x.float()

    def make(c, g):
        return GATStep(c, g, torch.optim.SGD(c.parameters(), lr=0.1), torch.optim.SGD(g.parameters(), lr=0.1),
                       eps=EPS, alpha=0.5, c_g=0.1)

    eager, compiled = make(clf, gen), torch.compile(make(clf2, gen2).step)
    for _ in range(2):
        m_eager, m_compiled = eager.step(x, y), compiled(x, y)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()), list(clf2.parameters()) + list(gen2.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for k in m_eager:
        torch.testing.assert_close(m_eager[k], m_compiled[k], atol=1e-5, rtol=1e-5)


def test_cuda_graph_needs_cuda_tensors_and_capturable_optimisers():
    clf, gen = _float_networks()
    adam = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (clf, gen)]
    with pytest.raises(ValueError, match="needs opt_classifier created with capturable=True"):
        GATStep(clf, gen, *adam, eps=EPS, cuda_graph=True)
    sgd = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (clf, gen)]
    with pytest.raises(ValueError, match="does not work with amp='fp16'"):
        GATStep(clf, gen, *sgd, eps=EPS, amp="fp16", cuda_graph=True)
    step = GATStep(clf, gen, *sgd, eps=EPS, cuda_graph=True)
    x, y = batch()
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA tensors, but x is on cpu"):
        step.step(x.float(), y)
