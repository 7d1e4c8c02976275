"""torch.compile(fullgraph=True) of code that calls the ops: no graph break, same
results and gradients as eager (CPU, cpp backend). Triton ops: test_gpu.py."""

import pytest
import torch

import gatfast

pytestmark = pytest.mark.skipif("cpp" not in gatfast.available_backends(), reason="C++ extension not built")


def adversarial_step(x, delta, logits_clean_w, target, x_adv, grad):
    """A miniature GAT step: perturb, a linear classifier, the fused loss, a PGD step."""
    x_pert, sq = gatfast.perturb_with_norm(x, delta, 0.3, "l2", grad_scale=-2.0)
    lc = x.flatten(1) @ logits_clean_w
    la = x_pert.flatten(1) @ logits_clean_w
    loss, cc, ca = gatfast.clean_adv_loss(lc, la, target, 0.5)
    nxt = gatfast.pgd_step(x_adv, grad, x, 0.05, 0.3, "linf")
    return loss + 0.1 * sq.mean(), cc, ca, nxt, gatfast.project(delta, 0.2, "linf")


def test_compiled_matches_eager_with_gradients():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 4, 4, generator=g)
    delta0 = torch.randn(8, 3, 4, 4, generator=g) * 0.3
    w0 = torch.randn(48, 10, generator=g)
    target = torch.randint(0, 10, (8,), generator=g)
    x_adv, grad = x.clone(), torch.randn(8, 3, 4, 4, generator=g)

    def run(fn):
        delta, w = delta0.clone().requires_grad_(), w0.clone().requires_grad_()
        loss, cc, ca, nxt, p = fn(x, delta, w, target, x_adv, grad)
        loss.backward()
        return loss.detach(), cc, ca, nxt, p.detach(), delta.grad, w.grad

    with gatfast.use_backend("cpp"):
        eager = run(adversarial_step)
        compiled = run(torch.compile(adversarial_step, fullgraph=True, backend="inductor"))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compile_keeps_the_custom_ops_in_the_graph():
    """The traced graph calls the gatfast ops (no fallback to a decomposition)."""
    torch._dynamo.reset()
    seen = []

    def spy(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    x = torch.rand(4, 6)
    with gatfast.use_backend("cpp"):
        torch.compile(lambda a: gatfast.perturb(a, a, 0.1, "linf"), fullgraph=True, backend=spy)(x)
    assert any("gatfast.perturb_fwd" in s for s in seen), seen
