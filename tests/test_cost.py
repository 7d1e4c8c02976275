"""gatfast.train.cost: training FLOPs, the cost measure that holds on any hardware, and
training seconds on one machine, the configs' steps timed in turns.

The count must agree with torch's FlopCounterMode where that works, grow by the same
amount with each attack step, scale with the data, follow a method's phases, include what
a method does after each epoch, and land in every run's summary.json."""

import json
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gatfast import train
from gatfast.train import cost


def _config(method="standard", **kwargs):
    options = dict(dataset="digits", method=method, eps=0.3, epochs=2, eval_pgd_steps=0, progress=False)
    options.update(kwargs)
    return train.TrainConfig(**options)


def test_the_count_is_flopcountermodes_where_that_works():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(5, 1, 8, 8)
    with FlopCounterMode(display=False) as reference:
        net(x).sum().backward()
    assert cost._count(lambda: net(x).sum().backward()) == reference.get_total_flops() > 0


def test_the_count_survives_a_gradient_with_respect_to_the_input():
    """What every attack step does, and what FlopCounterMode fails on (pytorch#131753)."""
    net = nn.Linear(6, 3)
    x = torch.rand(4, 6, requires_grad=True)

    def attack_step():
        (g,) = torch.autograd.grad(net(x).sum(), [x])
        return g

    # forward 2*4*6*3, and the gradient for the input only: another 2*4*6*3
    assert cost._count(attack_step) == 2 * (2 * 4 * 6 * 3)


def test_each_attack_step_adds_the_same_cost():
    per_example = {k: cost.training_flops(_config("pgd_at", attack_steps=k))["per_example"][0] for k in (1, 2, 3)}
    step = per_example[2] - per_example[1]
    assert step > 0 and per_example[3] - per_example[2] == pytest.approx(step, rel=1e-9)
    standard = cost.training_flops(_config())["per_example"][0]
    assert per_example[1] > standard


def test_the_total_scales_with_the_examples_and_the_epochs():
    small = cost.training_flops(_config(train_size=100))
    assert cost.training_flops(_config(train_size=200))["total"] == pytest.approx(2 * small["total"], rel=1e-9)
    assert cost.training_flops(_config(train_size=100, epochs=4))["total"] == pytest.approx(2 * small["total"],
                                                                                            rel=1e-9)
    assert small["total"] == pytest.approx(sum(small["per_epoch"])) and len(small["per_epoch"]) == 2


def test_a_method_whose_cost_changes_is_counted_in_each_phase():
    """crown_ibp drops CROWN-IBP's backward pass once beta reaches 0 (the end of the ramp)."""
    result = cost.training_flops(_config("crown_ibp", model="cert_cnn", epochs=4, eps_warmup=2.0))
    first, *_, last = result["per_example"]
    assert first > 1.5 * last > 0
    assert result["per_example"][:2] == [first, first] and result["per_example"][2:] == [last, last]
    with_beta = cost.training_flops(_config("crown_ibp", model="cert_cnn", epochs=4, eps_warmup=2.0, beta_end=0.5))
    assert with_beta["per_example"] == [first] * 4


def test_what_a_method_does_after_each_epoch_is_counted():
    """fgsm_rs runs PGD-10 on a fixed probe batch after every epoch."""
    result = cost.training_flops(_config("fgsm_rs", train_size=100))
    steps_only = sum(p * 100 for p in result["per_example"])
    assert result["total"] > steps_only * 1.2


def test_gat_counts_its_generator():
    gat = cost.training_flops(_config("gat"))["per_example"][0]
    classifier_only = cost.training_flops(_config("pgd_at", attack_steps=1))["per_example"][0]
    assert gat > classifier_only


def test_counting_leaves_the_random_state_alone():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    cost.training_flops(_config("pgd_at", attack_steps=1, train_size=50))
    assert torch.equal(torch.rand(3), before)


def test_every_run_records_its_training_flops(tmp_path):
    config = _config(epochs=1, train_size=100)
    train.train(config, tmp_path, log=lambda *_: None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_flops"] == pytest.approx(cost.training_flops(config)["total"], rel=1e-9)


class _SleepingMethod:
    """A method whose step takes a known time (more once eps passes 0.2: a second phase)
    and whose epoch's end takes another; it writes down who ran, in order."""

    def __init__(self, name, step_s, end_s, calls):
        self.name, self.step_s, self.end_s, self.calls, self.eps = name, step_s, end_s, calls, 0.0

    def modules(self):
        return {}

    def set_eps(self, eps):
        self.eps = eps

    def cost_key(self):
        return self.eps > 0.2

    def step(self, x, y):
        self.calls.append(self.name)
        time.sleep(self.step_s * (2 if self.cost_key() else 1))

    def end_epoch(self, epoch):
        time.sleep(self.end_s)


def test_training_seconds_times_each_phase_and_scales_it_to_the_schedule(monkeypatch):
    calls = []
    sleeps = {"standard": (0.02, 0.03), "pgd_at": (0.05, 0.0)}
    monkeypatch.setattr(cost, "build_method",
                        lambda config, *a: _SleepingMethod(config.method, *sleeps[config.method], calls))
    # 100 training images at batch 32: 3.125 steps an epoch. eps ramps from 0 to 0.3 over
    # 2 epochs: epoch 1's midpoint is at eps 0.075 (phase one), the others past 0.2 (two)
    configs = {name: _config(name, epochs=4, train_size=100, batch_size=32, eps_warmup=2.0) for name in sleeps}
    timed = cost.training_seconds(configs, rounds=3, steps=2, warmup=1)
    for name, (step, end) in sleeps.items():
        t = timed[name]
        assert t["steps_per_epoch"] == pytest.approx(100 / 32)
        assert set(t["step_s"]) == {"False", "True"}
        assert t["step_s"]["False"] == pytest.approx(step, rel=0.5)       # sleeps overshoot, never undershoot
        assert t["step_s"]["True"] == pytest.approx(2 * step, rel=0.5)
        assert t["end_s"] == pytest.approx(end, abs=0.015)
        expected = [100 / 32 * t["step_s"][p] + t["end_s"] for p in ("False", "True", "True", "True")]
        assert t["epoch_s"] == pytest.approx(expected) and t["total_s"] == pytest.approx(sum(expected))
    # warm-up (1 step per phase), then 3 rounds in which the two take turns, phase by phase
    assert calls == ["standard"] * 2 + ["pgd_at"] * 2 + (["standard"] * 4 + ["pgd_at"] * 4) * 3


def test_training_seconds_times_a_real_step_as_the_engine_runs_it(tmp_path):
    config = _config("standard", epochs=1, train_size=256, batch_size=64, eps_warmup=0.0)
    timed = cost.training_seconds({"standard": config, "pgd_at": _config("pgd_at", epochs=1, train_size=256,
                                                                         batch_size=64, eps_warmup=0.0,
                                                                         attack_steps=5)},
                                  rounds=5, steps=2)
    # five attack steps (a forward and a backward each) cost a multiple of one plain step.
    # Five rounds: the median of two is their mean, which one burst of load on a shared
    # machine pulled down to 1.5x once.
    assert timed["pgd_at"]["step_s"]["None"] > 2 * timed["standard"]["step_s"]["None"] > 0
    assert timed["standard"]["epoch_s"] == pytest.approx([4 * timed["standard"]["step_s"]["None"]
                                                          + timed["standard"]["end_s"]])


@pytest.mark.parametrize("options,words", [({"rounds": 0}, "rounds must be an integer >= 1"),
                                           ({"steps": 1.5}, "steps must be an integer >= 1"),
                                           ({"warmup": -1}, "warmup must be an integer >= 0")])
def test_training_seconds_refuses_bad_arguments_by_name(options, words):
    with pytest.raises(ValueError, match=words):
        cost.training_seconds({"standard": _config()}, **options)
    with pytest.raises(ValueError, match="configs is empty"):
        cost.training_seconds({})
