"""GPU-only checks: opcheck and torch.compile of the Triton ops, CUDA-graph capture
of the ops. (Values of every op on the cuda and triton backends against the
reference run in test_ops.py, on its gpu-marked cases.)"""

import pytest
import torch

import gatfast

pytestmark = pytest.mark.gpu

GPU_BACKENDS = ["cuda", "triton"]


def test_opcheck_triton_ops():
    from gatfast.ops.kernels import ops as k

    x = torch.rand(3, 2, 5, device="cuda")
    delta = (torch.randn(3, 2, 5, device="cuda") * 0.5).requires_grad_()
    for norm in (0, 1, 2):
        torch.library.opcheck(k.perturb_fwd, (delta, x, 0.4, norm, 0.0, 1.0, True, -2.0))
    g = torch.randn_like(x)
    torch.library.opcheck(k.pgd_step, (x, g, x, 0.1, 0.3, 2, 0.0, 1.0))
    torch.library.opcheck(k.pgd_step_out, (x, g, x, 0.1, 0.3, 1, 0.0, 1.0, torch.empty_like(x)))
    lc = torch.randn(4, 10, device="cuda", requires_grad=True)
    torch.library.opcheck(k.clean_adv_loss_fwd, (lc, lc.detach().clone().requires_grad_(),
                                                 torch.tensor([1, 2, 3, 9], device="cuda"), 0.5, True))


def test_opcheck_cuda_ops():
    ops = torch.ops.gatfast
    x = torch.rand(3, 2, 5, device="cuda")
    delta = (torch.randn(3, 2, 5, device="cuda") * 0.5).requires_grad_()
    for norm in (0, 1, 2):
        torch.library.opcheck(ops.perturb_fwd.default, (delta, x, 0.4, norm, 0.0, 1.0, True, -2.0))
    lc = torch.randn(4, 10, device="cuda", requires_grad=True)
    torch.library.opcheck(ops.clean_adv_loss_fwd.default, (lc, lc.detach().clone().requires_grad_(),
                                                           torch.tensor([1, 2, 3, 9], device="cuda"), 0.5, True))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_compile_fullgraph_on_gpu(backend):
    torch._dynamo.reset()

    def f(x, delta, lc, t):
        x_adv, sq = gatfast.perturb_with_norm(x, delta, 0.5, "l2", grad_scale=-1.0)
        loss, cc, ca = gatfast.clean_adv_loss(lc, lc * 0.5, t, 0.5)
        return x_adv.sum() + sq.sum() + loss, cc, gatfast.pgd_step(x, delta, x, 0.1, 0.3, "linf")

    x = torch.rand(8, 3, 8, 8, device="cuda")
    delta = torch.randn_like(x).requires_grad_()
    lc = torch.randn(8, 10, device="cuda", requires_grad=True)
    t = torch.randint(0, 10, (8,), device="cuda")
    with gatfast.use_backend(backend):
        eager = f(x, delta, lc, t)
        compiled = torch.compile(f, fullgraph=True)(x, delta, lc, t)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_ops_replay_inside_a_cuda_graph(backend):
    """Capture perturb + loss (forward and backward) + an in-place PGD step, replay
    on new data copied into the static buffers, and compare with eager."""
    x = torch.rand(16, 3, 8, 8, device="cuda")
    delta = torch.randn_like(x, requires_grad=True)
    w = torch.randn(192, 10, device="cuda", requires_grad=True)
    t = torch.randint(0, 10, (16,), device="cuda")
    x_adv = x.clone()

    def body():
        xa, sq = gatfast.perturb_with_norm(x, delta, 0.5, "l2", grad_scale=-1.0)
        loss, cc, ca = gatfast.clean_adv_loss(x.flatten(1) @ w, xa.flatten(1) @ w, t, 0.5)
        (loss + sq.mean()).backward()
        gatfast.pgd_step(x_adv, delta.grad, x, 0.05, 0.3, "linf", out=x_adv)
        return loss, cc

    with gatfast.use_backend(backend):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up outside capture
            for _ in range(2):
                delta.grad = w.grad = None
                body()
        torch.cuda.current_stream().wait_stream(s)
        delta.grad = w.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss, static_cc = body()

        new_x = torch.rand_like(x)
        x.copy_(new_x)
        x_adv.copy_(new_x)
        delta.grad.zero_()
        w.grad.zero_()
        graph.replay()
        torch.cuda.synchronize()
        replay = (static_loss.clone(), static_cc.clone(), x_adv.clone())

        x_adv.copy_(new_x)
        delta.grad = w.grad = None
        eager_loss, eager_cc = body()
    torch.testing.assert_close(replay[0], eager_loss)
    assert int(replay[1]) == int(eager_cc)
    torch.testing.assert_close(replay[2], x_adv)


def test_captured_gat_step_equals_the_uncaptured_one():
    """GATStep(cuda_graph=True): call 1 eager warm-up, call 2 capture + replay, calls 3-4
    replay with new batches copied into the static buffers; the updates equal eager ones."""
    import copy

    from gatfast.gat.generators import PerturbationGenerator
    from gatfast.train.models import SmallCNN
    from gatfast.gat.step import GATStep

    torch.manual_seed(0)
    clf, gen = SmallCNN().cuda(), PerturbationGenerator(1, 0.3, input="image+grad", width=8, blocks=1).cuda()
    clf2, gen2 = copy.deepcopy(clf), copy.deepcopy(gen)

    def make(c, g, graphed):
        # SGD, not Adam: Adam divides by sqrt(v), which turns the last-bit differences between
        # captured and eager convolutions into lr-sized steps where a gradient is near zero.
        opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (c, g)]
        return GATStep(c, g, *opts, eps=0.3, alpha=0.5, c_g=0.1, generator_steps=2, cuda_graph=graphed)

    eager, graphed = make(clf, gen, False), make(clf2, gen2, True)
    for i in range(4):
        gen_data = torch.Generator("cuda").manual_seed(i)
        x = torch.rand(32, 1, 28, 28, device="cuda", generator=gen_data)
        y = torch.randint(0, 10, (32,), device="cuda", generator=gen_data)
        m_eager, m_graphed = eager.step(x, y), graphed.step(x, y)
        torch.testing.assert_close(m_graphed["loss_classifier"], m_eager["loss_classifier"], atol=1e-4, rtol=1e-4)
    for a, b in zip(list(clf.parameters()) + list(gen.parameters()), list(clf2.parameters()) + list(gen2.parameters())):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="fixed batch shape"):
        graphed.step(torch.rand(8, 1, 28, 28, device="cuda"), torch.zeros(8, dtype=torch.int64, device="cuda"))
