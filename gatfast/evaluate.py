"""The evaluation suite behind `gatfast eval`: clean accuracy and accuracy under every
attack of gatfast.attacks at the trained eps, a sweep over eps for the plot, the threat
model in words, and named sanity checks that catch the classic ways a defence looks
stronger than it is (Carlini et al., "On Evaluating Adversarial Robustness", 2019):

- accuracy_falls_with_eps: robust accuracy never rises as eps grows;
- near_zero_at_eps_1: at linf eps = 1 any image can become any other, so accuracy ~ 0;
- black_box_not_stronger: no transfer or score-based attack beats the best white-box one;
- more_steps_do_not_help: PGD with 10x the steps does not raise accuracy (randomness or
  gradient masking would); pgd_converged: nor does it lower it much (the headline PGD
  had not converged, so its figure flatters the model).

Fast attacks (FGSM, PGD, transfer, the sweep) run on the first `n` test images; the slow
ones (CW, Square, AutoAttack, the 10x PGD check) on the first `n_slow`, and the
worst case over every attack is reported on those.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from gatfast import attacks

ATTACKS = ("fgsm", "pgd", "pgd_margin", "cw", "square", "autoattack", "transfer")
SLOW = ("cw", "square", "autoattack")


class EvalError(ValueError):
    """Evaluation settings that cannot run: the CLI prints one line and exits with 2."""


@dataclass
class EvalConfig:
    attacks: tuple = ATTACKS
    n: int = 1000                 # first test images for clean, FGSM, PGD, transfer and the sweep
    n_slow: int = 200             # first test images for CW, Square, AutoAttack, the 10x check
    n_autoattack: int | None = None  # AutoAttack on fewer images than n_slow (default: n_slow)
    eps: float | None = None      # default: the run's eps
    pgd_steps: int = 40
    pgd_restarts: int = 1
    check_factor: int = 10        # the more-steps check runs PGD with this many times the steps
    sweep: tuple | None = None    # eps values; default: eps x (0.25 .. 2) and, for linf, 1.0
    sweep_steps: int = 20
    cw_budget: float | None = None  # default: eps for l2 runs, DEFAULT_L2 by image size for linf
    cw_steps: int = 100
    cw_search_steps: int = 5
    square_queries: int = 5000
    autoattack_version: str = "standard"
    transfer_steps: int = 40
    seed: int = 0
    attack_batch_size: int = 500   # images per attack batch

    def validate(self, norm: str) -> "EvalConfig":
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise EvalError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
        for name in ("n", "n_slow", "pgd_steps", "pgd_restarts", "check_factor", "sweep_steps", "cw_steps",
                     "cw_search_steps", "square_queries", "transfer_steps", "attack_batch_size", "n_autoattack"):
            value = getattr(self, name)
            if name == "n_autoattack" and value is None:  # optional: n_slow
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EvalError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("eps", "cw_budget"):
            value = getattr(self, name)
            if value is not None:
                try:
                    attacks.base.check_eps(value, norm if name == "eps" else "l2", name)
                except (TypeError, ValueError) as e:
                    raise EvalError(str(e)) from None
        for value in self.sweep or ():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0) or \
                    (norm == "linf" and value > 1):
                raise EvalError(f"sweep eps must be in [0, 1] for linf (>= 0 for l2), got {value!r}")
        return self


# Common L2 budgets for the CW check of linf-trained models, by image size (C, H, W).
DEFAULT_L2 = {(1, 28, 28): 2.0, (1, 8, 8): 1.0, (3, 32, 32): 0.5}


def default_sweep(eps: float, norm: str) -> list[float]:
    values = {round(eps * f, 6) for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)}
    if norm == "linf":
        values = {v for v in values if v <= 1} | {1.0}
    return sorted(values)


@dataclass
class AttackResult:
    name: str
    description: str
    white_box: bool
    n: int
    clean: float               # clean accuracy on the same images
    accuracy: float
    seconds: float
    correct: list = field(default_factory=list, repr=False)  # per image, for the worst case

    def public(self) -> dict:
        d = asdict(self)
        d.pop("correct")
        return d


@torch.no_grad()
def _correct(model, x, y, batch_size) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]
                      for i in range(0, len(y), batch_size)])


def _noise(p: float, n: int) -> float:
    """Two binomial standard errors (at least two images): a difference within this is noise."""
    return max(2 / n, 2 * math.sqrt(max(p * (1 - p), 1e-12) / n))


def _check(name: str, passed: bool | None, detail: str) -> dict:
    return {"name": name, "passed": passed, "detail": detail}


def sanity_checks(results: dict[str, AttackResult], sweep: dict, norm: str, pgd_check: tuple | None) -> list[dict]:
    checks = []
    eps_sorted = sorted(sweep)
    if len(eps_sorted) >= 2:
        n = sweep[eps_sorted[0]]["n"]
        rises = [(a, b) for a, b in zip(eps_sorted, eps_sorted[1:])
                 if sweep[b]["accuracy"] > sweep[a]["accuracy"] + _noise(sweep[a]["accuracy"], n)]
        checks.append(_check("accuracy_falls_with_eps", not rises,
                             "accuracy never rises with eps" if not rises else
                             "accuracy rises from eps {:g} to {:g} ({:.1%} -> {:.1%})".format(
                                 rises[0][0], rises[0][1], sweep[rises[0][0]]["accuracy"],
                                 sweep[rises[0][1]]["accuracy"])))
    if norm == "linf" and 1.0 in sweep:
        acc = sweep[1.0]["accuracy"]
        checks.append(_check("near_zero_at_eps_1", acc <= 0.05,
                             f"accuracy {acc:.1%} at linf eps 1 (any image can become any other; <= 5% expected)"))
    else:
        checks.append(_check("near_zero_at_eps_1", None, "not applicable (l2, or eps 1 not in the sweep)"))
    white = [r for r in results.values() if r.white_box]
    black = [r for r in results.values() if not r.white_box]
    if white and black:
        m = min(r.n for r in white + black)
        def acc(r):
            return sum(r.correct[:m]) / m
        best_white, best_black = min(white, key=acc), min(black, key=acc)
        gap = acc(best_white) - acc(best_black)
        ok = gap <= _noise(acc(best_white), m)
        checks.append(_check("black_box_not_stronger", ok,
                             f"on the first {m} images: best white box {best_white.name} {acc(best_white):.1%}, "
                             f"best black box {best_black.name} {acc(best_black):.1%}"
                             + ("" if ok else " - gradients may be masked")))
    else:
        checks.append(_check("black_box_not_stronger", None, "not run (needs a white-box and a black-box attack)"))
    if pgd_check is not None:
        base_name, base_acc, strong_name, strong_acc, m = pgd_check
        tol = _noise(base_acc, m)
        checks.append(_check("more_steps_do_not_help", strong_acc <= base_acc + tol,
                             f"on the first {m} images: {base_name} {base_acc:.1%}, {strong_name} {strong_acc:.1%}"))
        checks.append(_check("pgd_converged", strong_acc >= base_acc - tol,
                             f"{strong_name} lowers {base_name}'s accuracy by {base_acc - strong_acc:+.1%} "
                             f"(noise {tol:.1%})"))
    return checks


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, num_classes: int,
             config: EvalConfig | None = None, surrogate: torch.nn.Module | None = None,
             surrogate_name: str = "surrogate", progress: bool = True, log=None) -> dict:
    """The whole suite on test images x (in [0, 1]) and labels y; returns a JSON-ready dict.
    log(line), if given, hears each attack's result as it finishes."""
    log = log or (lambda line: None)
    config = (config or EvalConfig()).validate(norm)
    eps = attacks.base.check_eps(config.eps if config.eps is not None else eps, norm)
    model.eval()
    n = min(config.n, len(y))
    n_slow = min(config.n_slow, n)
    x, y = x[:n], y[:n]
    clean = _correct(model, x, y, config.attack_batch_size)
    common = {"eps": eps, "norm": norm, "batch_size": config.attack_batch_size, "progress": progress}
    planned = []  # (key, attack, images)
    steps = config.pgd_steps
    if "fgsm" in config.attacks:
        planned.append(("fgsm", attacks.FGSM(model, **common), n))
    if "pgd" in config.attacks:
        planned.append(("pgd", attacks.PGD(model, steps=steps, restarts=config.pgd_restarts, seed=config.seed,
                                           **common), n))
    if "pgd_margin" in config.attacks:
        planned.append(("pgd_margin", attacks.PGD(model, steps=steps, restarts=config.pgd_restarts, loss="margin",
                                                  seed=config.seed, **common), n))
    cw_budget = config.cw_budget if config.cw_budget is not None else (
        eps if norm == "l2" else DEFAULT_L2.get(tuple(x.shape[1:]), 1.0))
    if "cw" in config.attacks:
        planned.append(("cw", attacks.CW(model, budget=cw_budget, steps=config.cw_steps,
                                         search_steps=config.cw_search_steps, batch_size=config.attack_batch_size,
                                         progress=progress), n_slow))
    if "square" in config.attacks:
        planned.append(("square", attacks.Square(model, n_queries=config.square_queries, seed=config.seed,
                                                 **common), n_slow))
    if "autoattack" in config.attacks:
        planned.append(("autoattack", attacks.AutoAttack(model, n_classes=num_classes,
                                                         version=config.autoattack_version, seed=config.seed,
                                                         **common), min(config.n_autoattack or n_slow, n_slow)))
    skipped = {}
    if "transfer" in config.attacks:
        if surrogate is None:
            skipped["transfer"] = "not run: no surrogate given (gatfast eval RUN --surrogate OTHER_RUN)"
        else:
            planned.append(("transfer", attacks.Transfer(model, surrogate, steps=config.transfer_steps,
                                                         seed=config.seed, surrogate_name=surrogate_name,
                                                         **common), n))

    results: dict[str, AttackResult] = {}
    for key, attack, m in planned:
        start = time.perf_counter()
        x_adv = attack(x[:m], y[:m])
        correct = _correct(model, x_adv, y[:m], config.attack_batch_size)
        results[key] = AttackResult(attack.name, attack.describe(), attack.white_box, m,
                                    float(clean[:m].float().mean()), float(correct.float().mean()),
                                    time.perf_counter() - start, correct.tolist())
        log(f"  {attack.name:<14} {results[key].accuracy:6.1%}  ({results[key].seconds:.0f} s)")

    pgd_check = None
    if "pgd" in results:
        strong = attacks.PGD(model, steps=steps * config.check_factor, restarts=config.pgd_restarts,
                             seed=config.seed + 1, **common)
        start = time.perf_counter()
        strong_correct = _correct(model, strong(x[:n_slow], y[:n_slow]), y[:n_slow], config.attack_batch_size)
        base_acc = sum(results["pgd"].correct[:n_slow]) / n_slow
        pgd_check = (results["pgd"].name, base_acc, strong.name, float(strong_correct.float().mean()), n_slow)
        log(f"  {strong.name:<14} {pgd_check[3]:6.1%}  ({time.perf_counter() - start:.0f} s, the more-steps check)")

    sweep = {}
    sweep_eps = list(config.sweep) if config.sweep is not None else default_sweep(eps, norm)
    for e in sweep_eps:
        if e == 0:
            sweep[0.0] = {"accuracy": float(clean.float().mean()), "n": n}
            continue
        attack = attacks.PGD(model, eps=e, norm=norm, steps=config.sweep_steps, seed=config.seed,
                             batch_size=config.attack_batch_size, progress=progress)
        start = time.perf_counter()
        acc = float(_correct(model, attack(x, y), y, config.attack_batch_size).float().mean())
        sweep[float(e)] = {"accuracy": acc, "n": n}
        log(f"  {attack.name} at eps {e:g}: {acc:6.1%}  ({time.perf_counter() - start:.0f} s, the eps sweep)")

    # CW reports accuracy within an L2 budget: another threat model unless the run is L2
    # with that budget. The worst case and the checks compare attacks within one model.
    in_model = {k: r for k, r in results.items() if k != "cw" or (norm == "l2" and cw_budget == eps)}
    worst = None
    if in_model:  # on the first n_slow images, over every attack that ran on all of them
        m = min(n_slow, max(r.n for r in in_model.values()))
        covering = [r for r in in_model.values() if r.n >= m]
        survived = torch.ones(m, dtype=torch.bool)
        for r in covering:
            survived &= torch.tensor(r.correct[:m], dtype=torch.bool)
        worst = {"accuracy": float(survived.float().mean()), "n": m, "clean": float(clean[:m].float().mean()),
                 "attacks": [r.name for r in covering]}

    checks = sanity_checks(in_model, sweep, norm, pgd_check)
    return {
        "threat_model": threat_model(eps, norm, tuple(x.shape[1:]), results, skipped),
        "eps": eps, "norm": norm, "n": n, "n_slow": n_slow,
        "clean": float(clean.float().mean()),
        "attacks": {k: r.public() for k, r in results.items()},
        "skipped": skipped,
        "worst_case": worst,
        "sweep": [{"eps": e, **v} for e, v in sorted(sweep.items())],
        "checks": checks,
        "config": asdict(config),
    }


def threat_model(eps: float, norm: str, shape: tuple, results: dict[str, AttackResult], skipped: dict) -> str:
    ball = "L-inf" if norm == "linf" else "L2"
    words = [f"Untargeted {ball} perturbations of at most eps = {eps:g} on images in [0, 1] of shape "
             f"{'x'.join(map(str, shape))}; the attacked model is the deployed one (eval mode)."]
    white = [r.description for r in results.values() if r.white_box]
    black = [r.description for r in results.values() if not r.white_box]
    if white:
        words.append("White box (weights and gradients known): " + "; ".join(white) + ".")
    if black:
        words.append("Black box (no gradients of the model): " + "; ".join(black) + ".")
    for why in skipped.values():
        words.append(f"Transfer {why}.")
    return " ".join(words)


def format_table(report: dict) -> str:
    """The printed table: every robust accuracy with the clean accuracy of the same images."""
    rows = [("attack", "box", "images", "clean", "robust")]
    for r in report["attacks"].values():
        rows.append((r["name"], "white" if r["white_box"] else "black", str(r["n"]), f"{r['clean']:.1%}",
                     f"{r['accuracy']:.1%}"))
    notes = []
    if report["worst_case"]:
        w = report["worst_case"]
        left_out = [r["name"] for r in report["attacks"].values() if r["name"] not in w["attacks"]]
        rows.append(("worst case" if left_out else "worst case (all)", "",
                     str(w["n"]), f"{w['clean']:.1%}", f"{w['accuracy']:.1%}"))
        notes.append(f"worst case: per image over {', '.join(w['attacks'])}"
                     + (f" (not {', '.join(left_out)}: fewer images or another threat model)" if left_out else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += notes
    for why in report["skipped"].values():
        lines.append(f"transfer: {why}")
    sweep = ", ".join(f"{s['eps']:g}: {s['accuracy']:.1%}" for s in report["sweep"])
    lines.append(f"PGD accuracy over eps: {sweep}")
    for c in report["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[c["passed"]]
        lines.append(f"[{mark}] {c['name']}: {c['detail']}")
    return "\n".join(lines)


def evaluate_run(run_dir, config: EvalConfig | None = None, *, surrogate_dir=None, device="cpu",
                 data_root=None, progress: bool = True, out_name: str = "eval.json", log=None) -> dict:
    """Evaluate a run folder's classifier on its dataset's test split; writes
    RUN_DIR/eval.json (atomically) and RUN_DIR/eval_eps.png, returns the report.
    Every setting is checked before any attack runs."""
    from pathlib import Path

    from gatfast import checkpoint, data, plots, train

    run_dir = Path(run_dir)
    try:
        run = train.load_run(run_dir, device)
        surrogate = train.load_run(surrogate_dir, device) if surrogate_dir is not None else None
    except train.ConfigError as e:
        raise EvalError(str(e)) from None
    cfg = run.config
    config = (config or EvalConfig()).validate(cfg.norm)
    if surrogate is not None:
        if Path(surrogate_dir).resolve() == run_dir.resolve():
            raise EvalError("--surrogate must be a separately trained run, not RUN_DIR itself")
        if surrogate.config.dataset != cfg.dataset:
            raise EvalError(f"the surrogate was trained on {surrogate.config.dataset}, the target on {cfg.dataset}")
    ds = data.load_dataset(cfg.dataset, data_root or cfg.data_root)
    x, y = (t.to(device) for t in ds.test.tensors)
    name = None
    if surrogate is not None:
        sc = surrogate.config
        name = f"{Path(surrogate_dir).name} ({sc.method}, {sc.model}, seed {sc.seed})"
    report = evaluate(run.classifier, x, y, eps=cfg.eps, norm=cfg.norm, num_classes=ds.num_classes, config=config,
                      surrogate=surrogate.classifier if surrogate else None, surrogate_name=name or "surrogate",
                      progress=progress, log=log)
    report["run"] = {"dir": str(run_dir), "dataset": cfg.dataset, "method": cfg.method, "model": cfg.model,
                     "seed": cfg.seed, "trained_eps": cfg.eps, "finished": bool(run.summary)}
    if surrogate is not None:
        report["surrogate"] = {"dir": str(surrogate_dir), "method": surrogate.config.method,
                               "model": surrogate.config.model, "seed": surrogate.config.seed}
    checkpoint.write_json(run_dir / out_name, report)
    plots.robustness_vs_eps({f"{cfg.method} (seed {cfg.seed})": report["sweep"]}, run_dir / "eval_eps.png",
                            title=f"{cfg.dataset}: PGD-{config.sweep_steps} accuracy over {cfg.norm} eps",
                            trained_eps=report["eps"])
    return report
