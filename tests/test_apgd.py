"""gatfast's own APGD (CE, DLR, APGD-T), AutoAttack's cascade and the strong default PGD,
against torchattacks on trained, robust mnist5k models (pgd_at and gat): on the same
images, never weaker than torchattacks' by more than 1 point (APGD-T: 2.5, below).
(Stronger is no fault: every output is checked inside the threat model in
test_attacks.py, and the model itself judges it.) APGD-T's three targeted runs from
random starts make it the noisiest of the three: on the models that different machines
train from the same seed, gatfast's was 1.7 points stronger, 0.3 points weaker (AMD EPYC,
2026-12-02) and 2.0 points weaker (CI, 2026-12-02) than torchattacks', the same
algorithm's spread over its random starts, so its bound is 2.5 points, one-sided.

The tests on the trained models are marked `slow` (about 6 minutes on 2 cores, most of
the suite's time): `make test-slow` runs them, and CI runs it beside `make test`."""

import pytest
import torch

from gatfast import attacks, train
from gatfast.evaluation import suite as evaluate
from gatfast.train import data
from gatfast.attacks import apgd
from gatfast.train import TrainConfig

torchattacks = pytest.importorskip("torchattacks")

EPS = 0.3
N = 300  # 1 point = 3 images


def _robust(tmp_path_factory, method, **config):
    folder = tmp_path_factory.mktemp(method)
    base = dict(dataset="mnist5k", method=method, eps=EPS, epochs=4, train_size=2000, batch_size=128,
                eval_pgd_steps=0, progress=False, seed=0)
    train.train(TrainConfig(**{**base, **config}), folder, log=lambda *_: None)
    return train.load_run(folder).classifier


@pytest.fixture(scope="module")
def robust_models(tmp_path_factory):
    """Two defended small CNNs, trained briefly: enough that a fair share of the test
    images resist PGD at eps 0.3 and the attacks' strength shows."""
    return {"pgd_at": _robust(tmp_path_factory, "pgd_at", attack_steps=5),
            "gat": _robust(tmp_path_factory, "gat")}


@pytest.fixture(scope="module")
def mnist_test():
    x, y = data.load_dataset("mnist5k").test.tensors
    return x[:N], y[:N]


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _theirs(attack, x, y, batch=150):
    return torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)])


def test_checkpoints_follow_the_reference_schedule():
    # 100 steps: checks after 22, then intervals shrinking by 3 down to 6 (Croce and Hein 2020)
    assert apgd.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd.checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # interval 2, then the floor of 1
    assert apgd.checkpoints(1) == [1]


def test_dlr_losses_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -2.0]])
    y = torch.tensor([0, 2])
    # sample 0: correct, best other 1.0, z_pi1 - z_pi3 = 3 - 0; sample 1: wrong, best other 2.0, 2 - 0
    torch.testing.assert_close(apgd.dlr_loss(logits, y), torch.tensor([-(3 - 1) / 3, -(1 - 2) / 2]))
    target = torch.tensor([1, 1])
    # denominators z_pi1 - (z_pi3 + z_pi4) / 2: 3 - (0 - 1) / 2 = 3.5 and 2 - (0 - 2) / 2 = 3
    torch.testing.assert_close(apgd.targeted_dlr_loss(logits, y, target),
                               torch.tensor([-(3 - 1) / 3.5, -(1 - 2) / 3.0]))


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["pgd_at", "gat"])
def test_apgd_agrees_with_torchattacks_on_robust_models(robust_models, mnist_test, model_name):
    model, (x, y) = robust_models[model_name], mnist_test
    clean = accuracy(model, x, y)
    for loss, kind in (("ce", torchattacks.APGD), ("dlr", torchattacks.APGD)):
        theirs = accuracy(model, _theirs(kind(model, norm="Linf", eps=EPS, steps=100, seed=0, loss=loss), x, y), y)
        ours = accuracy(model, attacks.APGD(model, eps=EPS, steps=100, loss=loss)(x, y), y)
        assert 0.1 < theirs < clean - 0.1, f"{model_name}: the model must resist some images ({theirs:.3f})"
        assert abs(ours - theirs) <= 0.01 + 1e-9, (model_name, loss, ours, theirs)
    # APGD-T against the 3 most likely wrong classes, not AutoAttack's 9: the same code
    # path at a third of the cost (this test was the slowest of the suite)
    apgdt = torchattacks.APGDT(model, norm="Linf", eps=EPS, steps=100, seed=0, n_classes=10)
    apgdt.n_target_classes = 3  # torchattacks sets it to n_classes - 1 and takes no argument for it
    theirs = accuracy(model, _theirs(apgdt, x, y), y)
    # in torchattacks' batches, each from seed 0: the same first random starts where both draw alike
    ours_apgdt = attacks.APGD(model, eps=EPS, steps=100, loss="dlr", targets=3)
    ours = accuracy(model, _theirs(ours_apgdt, x, y), y)
    assert ours <= theirs + 0.025 + 1e-9, (model_name, "apgd-t", ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["pgd_at", "gat"])
def test_default_pgd_is_as_strong_as_apgd(robust_models, mnist_test, model_name):
    """The suite's PGD (the defaults of `gatfast eval`: 100 steps, APGD's adaptive step
    size) is no weaker than torchattacks' APGD-CE on the same images, by more than 1 point."""
    model, (x, y) = robust_models[model_name], mnist_test
    config = evaluate.EvalConfig()
    pgd = attacks.PGD(model, eps=EPS, steps=config.pgd_steps, step_size=config.pgd_step_size,
                      restarts=config.pgd_restarts)
    theirs = accuracy(model, _theirs(torchattacks.APGD(model, norm="Linf", eps=EPS, steps=100, seed=0), x, y), y)
    ours = accuracy(model, pgd(x, y), y)
    assert ours <= theirs + 0.01 + 1e-9, (model_name, ours, theirs)


@pytest.mark.slow
def test_autoattack_cascade_outcomes(robust_models, mnist_test):
    """Each member attacks only what the earlier ones left; the returned images are
    misclassified exactly where some member succeeded, and stay in the threat model."""
    model, (x, y) = robust_models["gat"], mnist_test
    x, y = x[:60], y[:60]
    aa = attacks.AutoAttack(model, eps=EPS, steps=10, square_queries=100)
    x_adv = aa(x, y)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    correct = torch.tensor([bool(c) for c in (model(x_adv).argmax(1) == y)])
    outcomes = torch.stack([aa.outcomes[k] for k in attacks.autoattack.MEMBERS])
    standing = (outcomes == 1).sum(0) == 4  # every member ran on it and failed
    assert torch.equal(standing, correct)
    right = model(x).argmax(1) == y
    assert bool((outcomes[:, ~right] == 0).all()), "misclassified clean images count as broken for every member"
    for earlier, later in zip(outcomes[:, right], outcomes[1:, right]):
        assert bool(((later != -1) == (earlier == 1)).all()), "a member attacks exactly the images left standing"
