"""The evaluation suite behind `gatfast eval`: clean accuracy and accuracy under every
attack of gatfast.attacks at the trained eps, on the whole test split by default; the
headline, the per-image worst case over all of them; a sweep over eps for the plot; the
threat model in words; and named sanity checks that catch the classic ways a defence
looks stronger than it is (Carlini et al., "On Evaluating Adversarial Robustness", 2019).

Every attack runs on the same images, so the checks compare attacks per image: an image
that attack B breaks and the headline A leaves standing is direct evidence that A is
weak. Each check counts such images (b) against those A breaks and B leaves (c), and
fails when b is too large for a fair coin (a one-sided exact binomial, McNemar's test,
at `check_alpha`):

- accuracy_falls_with_eps: PGD at a smaller eps breaks no images PGD at a larger one spares;
- near_zero_at_eps_1: at linf eps = 1 any image can become any other, so accuracy ~ 0;
- black_box_not_stronger: no transfer or score-based attack beats the white-box worst case;
- more_steps_do_not_help: PGD with `check_factor` times the steps does not beat the headline;
- restarts_do_not_help: PGD with `check_restarts` times the restarts does not either;
- stronger_loss_does_not_help: APGD-T (targeted DLR loss) does not beat the rest;
- worst_case_is_converged: the member of the ensemble that breaks the most images no other
  member breaks is not needed (the others are not significantly weaker without it);
- certified_below_empirical: no attack breaks an image the certified bounds verified (a
  certificate is a lower bound on robust accuracy: one violation is a bug in a bound or an
  attack, so this check has no tolerance).

Beside the attacks, a `certified` row (gatfast.certify, CROWN-IBP by default) gives the
share of images verified over the whole ball: a lower bound, where the attacks give upper ones.

The check attacks are folded into the reported worst case too, so a failed check names
the attack and the images it won, and the figure already uses the stronger result.
AutoAttack's members (APGD-CE, APGD-T, FAB-T, Square) run with the published settings;
FAB-T and Square only on the images APGD-CE and APGD-T left standing, as in AutoAttack.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from gatfast import attacks, certify, train
from gatfast.attacks import autoattack
from gatfast.attacks.base import correct
from gatfast.evaluation import journal, plots
from gatfast.train import data, engine, runs

ATTACKS = ("fgsm", "pgd", "pgd_margin", "apgd_ce", "apgd_t", "fab_t", "square", "cw", "transfer")
GROUPS = {"autoattack": autoattack.MEMBERS}  # names that stand for several attacks
CASCADE = ("fab_t", "square")  # on the images AutoAttack's earlier members left standing
CERTIFIED = certify.METHODS + ("none",)  # the bound of the certified row; none: no row


class EvalError(ValueError):
    """Evaluation settings that cannot run: the CLI prints one line and exits with 2."""


@dataclass
class EvalConfig:
    attacks: tuple = ATTACKS + ("autoattack",)
    n: int = 1000                 # first test images for every attack but CW (all of a smaller split)
    n_slow: int = 200             # first test images for CW
    n_autoattack: int | None = None  # AutoAttack's members on only the first N images (default: n)
    eps: float | None = None      # default: the run's eps
    pgd_steps: int = 100
    pgd_step_size: float | None = None  # default: APGD's adaptive step size (measured: README)
    pgd_restarts: int = 1
    autoattack_steps: int = 100   # APGD-CE, APGD-T, FAB-T (AutoAttack's published setting)
    check_factor: int = 5         # the more-steps check runs PGD with this many times the steps
    check_restarts: int = 5       # the restarts check runs PGD with this many times the restarts
    check_alpha: float = 0.01     # significance of the per-image checks (one-sided)
    sweep: tuple | None = None    # eps values; default: eps x (0.25 .. 2) and, for linf, 1.0
    sweep_steps: int = 20
    cw_budget: float | None = None  # default: eps for l2 runs, DEFAULT_L2 by image size for linf
    cw_steps: int = 100
    cw_search_steps: int = 5
    square_queries: int = 5000
    transfer_steps: int = 100
    seed: int = 0
    attack_batch_size: int = 250   # images per attack batch (fastest on the CPU here: README)
    certified: str = "crown-ibp"   # the bound of the certified row (CERTIFIED; "none": no row)

    def keys(self) -> tuple:
        """The attacks to run, with group names (autoattack) expanded, in ATTACKS order."""
        wanted = set()
        for a in self.attacks:
            wanted.update(GROUPS.get(a, (a,)))
        return tuple(a for a in ATTACKS if a in wanted)

    def validate(self, norm: str) -> "EvalConfig":
        unknown = [a for a in self.attacks if a not in ATTACKS and a not in GROUPS]
        if unknown:
            raise EvalError(f"attacks: unknown {unknown[0]!r}; choose from {', '.join(ATTACKS + tuple(GROUPS))}")
        if not self.attacks:
            raise EvalError("attacks: name at least one attack")
        for name in ("n", "n_slow", "pgd_steps", "pgd_restarts", "autoattack_steps", "check_factor",
                     "check_restarts", "sweep_steps", "cw_steps", "cw_search_steps", "square_queries",
                     "transfer_steps", "attack_batch_size", "n_autoattack"):
            value = getattr(self, name)
            if name == "n_autoattack" and value is None:  # optional: n
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EvalError(f"{name} must be an int >= 1, got {value!r}")
        if self.n_autoattack is not None and self.n_autoattack > self.n:
            raise EvalError(f"n_autoattack ({self.n_autoattack}) must not exceed n ({self.n}): "
                            f"AutoAttack runs on the first n_autoattack of the n images")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EvalError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.certified not in CERTIFIED:
            raise EvalError(f"certified must be one of {', '.join(CERTIFIED)}, got {self.certified!r}")
        if not (isinstance(self.check_alpha, (int, float)) and 0 < self.check_alpha < 1):
            raise EvalError(f"check_alpha must be in (0, 1), got {self.check_alpha!r}")
        for name in ("eps", "cw_budget", "pgd_step_size"):
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


# Per-image outcomes: 1 the attack ran and the image stayed correctly classified, 0 it
# was misclassified (broken, or wrong already when clean), -1 the attack did not run on it.
SURVIVED, BROKEN, NOT_RUN = 1, 0, -1


@dataclass
class AttackResult:
    name: str
    description: str
    white_box: bool
    n: int                     # images it covers (the first n of the evaluation)
    clean: float               # clean accuracy on the same images
    accuracy: float            # robust accuracy on them (cascade: after this member and those before)
    seconds: float
    role: str = "suite"        # "suite", "cascade" (AutoAttack's, on what the earlier ones left) or "check"
    attacked: int = 0          # images it actually attacked (cascade: fewer than n)
    outcome: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int8), repr=False)
    # per image of the evaluation: SURVIVED, BROKEN or NOT_RUN (int8, on the CPU)

    def public(self) -> dict:
        """JSON-ready: the outcome as a list."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"outcome": self.outcome.tolist()}

    def broken(self) -> torch.Tensor:
        return self.outcome == BROKEN

    def ran(self) -> torch.Tensor:
        return self.outcome != NOT_RUN


def _check(name: str, passed: bool | None, detail: str) -> dict:
    return {"name": name, "passed": passed, "detail": detail}


def mcnemar(challenger: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor | None = None) -> dict:
    """Per image broken masks of two attacks on the same images: b images only the
    challenger broke, c only the reference; p = P(X >= b) for X ~ Binomial(b + c, 1/2),
    the chance of a split at least this lopsided if neither attack were stronger."""
    from scipy.stats import binomtest

    if valid is not None:
        challenger, reference = challenger & valid, reference & valid
    b, c = int((challenger & ~reference).sum()), int((reference & ~challenger).sum())
    p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    return {"b": b, "c": c, "p": float(p)}


def _beats(name: str, other: str, t: dict, alpha: float) -> tuple[bool, str]:
    passed = t["p"] >= alpha
    return passed, (f"{name} broke {t['b']} images {other} left standing ({other} broke {t['c']} it left), "
                    f"p = {t['p']:.2g}" + ("" if passed else f" < {alpha:g}: {other} is weaker than {name}"))


def broken_by(results: dict, keys) -> torch.Tensor:
    """Per image: did any of these attacks break it (or was it wrong clean)."""
    keys = list(keys)
    out = torch.zeros(len(results[keys[0]].outcome), dtype=torch.bool)
    for k in keys:
        out |= results[k].broken()
    return out


def sanity_checks(results: dict[str, AttackResult], ensemble: list, sweep: dict, norm: str,
                  alpha: float) -> list[dict]:
    """The checks of the module docstring; `ensemble` names the suite attacks the headline
    is the worst case of (the keys of results in the run's threat model, checks excluded)."""
    checks = []
    eps_sorted = [e for e in sorted(sweep) if "outcome" in sweep[e]]
    if len(eps_sorted) >= 2:
        worst = None
        for small, large in zip(eps_sorted, eps_sorted[1:]):
            t = mcnemar(sweep[small]["outcome"] == BROKEN, sweep[large]["outcome"] == BROKEN)
            if worst is None or t["p"] < worst[2]["p"]:
                worst = (small, large, t)
        small, large, t = worst
        passed = t["p"] >= alpha
        checks.append(_check("accuracy_falls_with_eps", passed,
                             f"eps {small:g} broke {t['b']} images eps {large:g} spared (and {t['c']} the other "
                             f"way), p = {t['p']:.2g}" + ("" if passed else f" < {alpha:g}: accuracy rises with eps")))
    if norm == "linf" and 1.0 in sweep:
        acc = sweep[1.0]["accuracy"]
        checks.append(_check("near_zero_at_eps_1", acc <= 0.05,
                             f"accuracy {acc:.1%} at linf eps 1 (any image can become any other; <= 5% expected)"))
    else:
        checks.append(_check("near_zero_at_eps_1", None, "not applicable (l2, or eps 1 not in the sweep)"))
    if not ensemble:
        return checks
    headline = broken_by(results, ensemble)
    white = [k for k in ensemble if results[k].white_box]
    black = [k for k in ensemble if not results[k].white_box]
    if white and black:
        white_broken = broken_by(results, white)
        found = []
        for k in black:
            t = mcnemar(results[k].broken(), white_broken, results[k].ran())
            found.append((t["p"], k, t))
        p, k, t = min(found)
        passed, detail = _beats(results[k].name, "the white-box worst case", t, alpha)
        checks.append(_check("black_box_not_stronger", passed, detail + ("" if passed else " - gradients may be masked")))
    else:
        checks.append(_check("black_box_not_stronger", None, "not run (needs a white-box and a black-box attack)"))
    for name, key in (("more_steps_do_not_help", "pgd_more_steps"), ("restarts_do_not_help", "pgd_restarts")):
        if key in results:
            t = mcnemar(results[key].broken(), headline, results[key].ran())
            checks.append(_check(name, *_beats(results[key].name, "the worst case", t, alpha)))
    if "apgd_t" in results:
        rest = [k for k in ensemble if k != "apgd_t"]
        if rest:
            t = mcnemar(results["apgd_t"].broken(), broken_by(results, rest), results["apgd_t"].ran())
            checks.append(_check("stronger_loss_does_not_help",
                                 *_beats(results["apgd_t"].name, "the worst case of the other attacks", t, alpha)))
    if len(ensemble) >= 2:
        unique = {}
        for k in ensemble:
            others = broken_by(results, [o for o in ensemble if o != k])
            unique[k] = int((results[k].broken() & ~others).sum())
        strongest = max(ensemble, key=lambda k: (unique[k], -ensemble.index(k)))  # ties: the first
        others = broken_by(results, [o for o in ensemble if o != strongest])
        t = mcnemar(results[strongest].broken(), others, results[strongest].ran())
        passed, detail = _beats(results[strongest].name, "the worst case without it", t, alpha)
        checks.append(_check("worst_case_is_converged", passed,
                             f"strongest member {results[strongest].name}: " + detail))
    return checks


def _plan(model, x, eps, norm, num_classes, config: EvalConfig, surrogate, surrogate_name, progress):
    """(key, attack, images, role) for every attack of the suite and of the checks."""
    n = len(x)
    n_aa = min(config.n_autoattack or n, n)
    keys = config.keys()
    common = {"eps": eps, "norm": norm, "batch_size": config.attack_batch_size, "progress": progress}
    # PGD's default is APGD's schedule: another seed than APGD-CE's, so it adds restarts, not a copy
    pgd = {"steps": config.pgd_steps, "step_size": config.pgd_step_size, "seed": config.seed + 4, **common}
    plan = []
    if "fgsm" in keys:
        plan.append(("fgsm", attacks.FGSM(model, **common), n, "suite"))
    if "pgd" in keys:
        plan.append(("pgd", attacks.PGD(model, restarts=config.pgd_restarts, **pgd), n, "suite"))
    if "pgd_margin" in keys:
        plan.append(("pgd_margin", attacks.PGD(model, restarts=config.pgd_restarts, loss="margin", **pgd), n, "suite"))
    for key in autoattack.MEMBERS:
        if key in keys:
            member = autoattack.member(key, model, n_classes=num_classes, seed=config.seed,
                                       steps=config.autoattack_steps, square_queries=config.square_queries, **common)
            cascade = key in CASCADE and any(k in keys for k in ("apgd_ce", "apgd_t"))
            plan.append((key, member, n_aa, "cascade" if cascade else "suite"))
    if "transfer" in keys and surrogate is not None:
        plan.append(("transfer", attacks.Transfer(model, surrogate, steps=config.transfer_steps, seed=config.seed,
                                                  surrogate_name=surrogate_name, **common), n, "suite"))
    if "cw" in keys:
        cw_budget = config.cw_budget if config.cw_budget is not None else (
            eps if norm == "l2" else DEFAULT_L2.get(tuple(x.shape[1:]), 1.0))
        plan.append(("cw", attacks.CW(model, budget=cw_budget, steps=config.cw_steps,
                                      search_steps=config.cw_search_steps, batch_size=config.attack_batch_size,
                                      progress=progress), min(config.n_slow, n), "suite"))
    # The checks' challengers, on every image, with other seeds: the headline PGD with more
    # steps of the same size, with more restarts, and (when the suite has no APGD-T) the
    # stronger targeted loss.
    if "pgd" in keys:
        more = dict(pgd, steps=config.pgd_steps * config.check_factor, seed=config.seed + 1)
        plan.append(("pgd_more_steps", attacks.PGD(model, restarts=config.pgd_restarts, **more), n, "check"))
        plan.append(("pgd_restarts", attacks.PGD(model, restarts=config.pgd_restarts * config.check_restarts,
                                                 **dict(pgd, seed=config.seed + 2)), n, "check"))
    if "apgd_t" not in keys and num_classes >= 4:
        plan.append(("apgd_t", autoattack.member("apgd_t", model, n_classes=num_classes, seed=config.seed + 3,
                                                 steps=config.autoattack_steps, **common), n_aa, "check"))
    return plan


def _run_attack(key, attack, x, y, m, role, results, clean):
    """Run one attack on the first m images (cascade: only those AutoAttack's earlier
    members left standing) and record its per-image outcome over all images."""
    outcome = torch.full((len(y),), NOT_RUN, dtype=torch.int8)
    standing = torch.zeros(len(y), dtype=torch.bool)
    standing[:m] = True
    if role == "cascade":
        earlier = [k for k in autoattack.MEMBERS[:autoattack.MEMBERS.index(key)] if k in results]
        standing &= ~broken_by(results, earlier)
        outcome[:m] = BROKEN  # broken by an earlier member: AutoAttack counts it broken
    start = time.perf_counter()
    todo, survived, _ = autoattack.attack_standing(attack, x, y, standing.to(y.device))
    outcome[todo.cpu()] = survived.cpu().to(torch.int8)
    return AttackResult(attack.name, attack.describe(), attack.white_box, m, float(clean[:m].float().mean()),
                        float((outcome[:m] == SURVIVED).float().mean()), time.perf_counter() - start, role,
                        int(todo.numel()), outcome)


def _from_record(record: dict) -> AttackResult:
    """An AttackResult from its public() record (a journal's)."""
    return AttackResult(**{**record, "outcome": torch.tensor(record["outcome"], dtype=torch.int8)})


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, num_classes: int,
             config: EvalConfig | None = None, surrogate: torch.nn.Module | None = None,
             surrogate_name: str = "surrogate", progress: bool = True, log=None,
             journal_path: Path | None = None) -> dict:
    """The whole suite on test images x (in [0, 1]) and labels y; returns a JSON-ready dict.
    log(line), if given, hears each attack's result as it finishes. journal_path: where each
    finished attack is recorded, and read back by an evaluation of the same model, images
    and settings that was stopped, which then goes on from there (gatfast.evaluation.journal)."""
    log = log or (lambda line: None)
    config = (config or EvalConfig()).validate(norm)
    eps = attacks.base.check_eps(config.eps if config.eps is not None else eps, norm)
    model.eval()
    n = min(config.n, len(y))
    x, y = x[:n], y[:n]
    clean = correct(model, x, y, config.attack_batch_size)
    skipped = {}
    if "transfer" in config.keys() and surrogate is None:
        skipped["transfer"] = "not run: no surrogate given (gatfast eval RUN --surrogate OTHER_RUN)"

    settings = {"config": asdict(config), "eps": eps, "norm": norm, "num_classes": num_classes,
                "surrogate_name": surrogate_name if surrogate is not None else None}
    key_of_journal = journal.fingerprint(settings, [x, y], [model, surrogate]) if journal_path else None
    finished = journal.load(journal_path, key_of_journal, log)
    if finished:
        log(f"  going on from {journal_path}: {len(finished)} attacks finished before")
    results: dict[str, AttackResult] = {}
    for key, attack, m, role in _plan(model, x, eps, norm, num_classes, config, surrogate, surrogate_name, progress):
        if key in finished:
            results[key] = r = _from_record(finished[key])
        else:
            results[key] = r = _run_attack(key, attack, x, y, m, role, results, clean)
            journal.save(journal_path, key_of_journal, {k: v.public() for k, v in results.items()})
        where = f"{r.attacked} of {r.n} images" if role == "cascade" else f"{r.n} images"
        log(f"  {r.name:<16} {r.accuracy:6.1%}  ({where}, {r.seconds:.0f} s{', a check' if role == 'check' else ''}"
            f"{', from the journal' if key in finished else ''})")

    sweep = {}
    sweep_eps = list(config.sweep) if config.sweep is not None else default_sweep(eps, norm)
    for e in sweep_eps:
        if e == 0:
            sweep[0.0] = {"accuracy": float(clean.float().mean()), "n": n}
            continue
        attack = attacks.PGD(model, eps=e, norm=norm, steps=config.sweep_steps, seed=config.seed,
                             batch_size=config.attack_batch_size, progress=progress)
        start = time.perf_counter()
        right = correct(model, attack(x, y), y, config.attack_batch_size).cpu()
        sweep[float(e)] = {"accuracy": float(right.float().mean()), "n": n, "outcome": right.to(torch.int8)}
        log(f"  {attack.name} at eps {e:g}: {sweep[float(e)]['accuracy']:6.1%}  "
            f"({time.perf_counter() - start:.0f} s, the eps sweep)")

    report = {
        "threat_model": threat_model(eps, norm, tuple(x.shape[1:]), results, skipped),
        "eps": eps, "norm": norm, "n": n, "n_slow": min(config.n_slow, n),
        "clean": float(clean.float().mean()),
        "attacks": {k: r.public() for k, r in results.items()},
        "skipped": skipped,
        "sweep": [{"eps": e, **{k: v for k, v in s.items() if k != "outcome"}} for e, s in sorted(sweep.items())],
        "config": asdict(config),
    }
    report.update(headline(results, clean, norm, eps, config))
    verified = None
    if config.certified != "none":
        report["certified"], verified = certified_row(model, x, y, eps, norm, config, clean)
        if verified is not None:
            log(f"  certified ({config.certified}) {report['certified']['accuracy']:6.1%}  "
                f"({n} images, {report['certified']['seconds']:.0f} s, a lower bound)")
    report["checks"] = sanity_checks(results, report["worst_case"]["ensemble"] if report["worst_case"] else [],
                                     sweep, norm, config.check_alpha)
    report["checks"].append(certified_check(results, verified, norm, eps, config))
    return report


def certified_row(model, x, y, eps: float, norm: str, config: EvalConfig, clean: torch.Tensor):
    """(the certified row, the per-image verified flags), or a row saying why there is none
    (a model with a layer certify has no rule for)."""
    try:
        certify.chain(model)
    except TypeError as e:
        return {"accuracy": None, "method": config.certified, "why": f"not certified: {e}"}, None
    start = time.perf_counter()
    verified = certify.verified(model, x, y, eps, norm=norm, method=config.certified,
                                batch_size=config.attack_batch_size).cpu()
    row = {"accuracy": float(verified.float().mean()), "n": len(y), "clean": float(clean.float().mean()),
           "method": config.certified, "seconds": round(time.perf_counter() - start, 3),
           "outcome": verified.to(torch.int8).tolist()}
    return row, verified


def certified_check(results: dict, verified: torch.Tensor | None, norm: str, eps: float, config: EvalConfig) -> dict:
    """certified_below_empirical: an image the bounds verified that an attack of the threat
    model broke is a bug in a bound or an attack (no tolerance: not a statistical check)."""
    keys = [k for k, r in results.items() if in_threat_model(k, r, norm, eps, config)]
    if verified is None or not keys:
        return _check("certified_below_empirical", None, "not run (needs the certified row and an attack)")
    violations = {results[k].name: int((verified & results[k].broken()).sum()) for k in keys}
    bad = {name: v for name, v in violations.items() if v}
    if bad:
        return _check("certified_below_empirical", False,
                      "images the bounds verified were broken by " + ", ".join(f"{k} ({v})" for k, v in bad.items())
                      + ": a bound or an attack is wrong")
    return _check("certified_below_empirical", True,
                  f"no attack broke any of the {int(verified.sum())} images the bounds verified")


def in_threat_model(key: str, result: AttackResult, norm: str, eps: float, config: EvalConfig) -> bool:
    """CW reports accuracy within an L2 budget: another threat model unless the run is L2
    with that budget. The worst case and the checks compare attacks within one model."""
    return key != "cw" or (norm == "l2" and config.cw_budget in (None, eps))


def headline(results: dict, clean: torch.Tensor, norm: str, eps: float, config: EvalConfig) -> dict:
    """The worst case per image over every attack of the run's threat model (the checks'
    attacks included: where one beat the suite, the figure uses it), and the AutoAttack
    row when all four of its members ran."""
    out = {"worst_case": None, "autoattack": None}
    keys = [k for k, r in results.items() if in_threat_model(k, r, norm, eps, config)]
    if keys:
        ensemble = [k for k in keys if results[k].role != "check"]
        broken = broken_by(results, keys)
        suite_broken = broken_by(results, ensemble) if ensemble else broken
        out["worst_case"] = {"accuracy": float((~broken).float().mean()), "n": len(clean),
                             "clean": float(clean.float().mean()),
                             "attacks": [f"{results[k].name} ({results[k].n})" for k in keys],
                             "ensemble": ensemble,
                             "checks_broke_more": int((broken & ~suite_broken).sum())}
    if all(k in results for k in autoattack.MEMBERS):
        m = max(results[k].n for k in ("apgd_ce", "apgd_t"))
        broken = broken_by(results, autoattack.MEMBERS)[:m]
        out["autoattack"] = {"accuracy": float((~broken).float().mean()), "n": m,
                             "clean": float(clean[:m].float().mean())}
    return out


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
    """The printed table: every robust accuracy with the clean accuracy of the same images,
    AutoAttack, the checks' attacks and the worst case (the headline) last."""
    rows = [("attack", "box", "images", "clean", "robust")]
    attacks_ = report["attacks"]

    def row(r, label=None):
        return (label or r["name"], "white" if r["white_box"] else "black", str(r["n"]), f"{r['clean']:.1%}",
                f"{r['accuracy']:.1%}")

    for role in ("suite", "cascade"):
        rows += [row(r, r["name"] + (" *" if role == "cascade" else "")) for r in attacks_.values()
                 if r["role"] == role]
    if report.get("autoattack"):
        a = report["autoattack"]
        rows.append(("AutoAttack (standard)", "both", str(a["n"]), f"{a['clean']:.1%}", f"{a['accuracy']:.1%}"))
    rows += [row(r, r["name"] + " (check)") for r in attacks_.values() if r["role"] == "check"]
    notes = []
    cascade = [r for r in attacks_.values() if r["role"] == "cascade"]
    if cascade:
        notes.append("* AutoAttack's cascade: " + ", ".join(f"{r['name']} attacked {r['attacked']}" for r in cascade)
                     + " images, those its members before left standing; each row is the accuracy after it")
    if report["worst_case"]:
        w = report["worst_case"]
        rows.append(("worst case", "", str(w["n"]), f"{w['clean']:.1%}", f"{w['accuracy']:.1%}"))
        left_out = [r["name"] for k, r in attacks_.items() if k not in w["ensemble"] and r["role"] != "check"]
        notes.append(f"worst case (the headline): per image over {', '.join(w['attacks'])} images"
                     + (f"; not {', '.join(left_out)}: another threat model" if left_out else "")
                     + (f"; the checks' attacks broke {w['checks_broke_more']} images the suite left standing"
                        if w.get("checks_broke_more") else ""))
    c = report.get("certified")
    if c and c["accuracy"] is not None:
        rows.append((f"certified ({c['method']})", "bound", str(c["n"]), f"{c['clean']:.1%}", f"{c['accuracy']:.1%}"))
        notes.append("certified: images whose every margin has a positive lower bound over the whole ball, a "
                     "lower bound on robust accuracy (the attacks give upper ones)")
    elif c:
        notes.append(f"certified: {c['why']}")
    widths = [max(len(row_[i]) for row_ in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row_, widths)))
             for row_ in rows]
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
    journal_path = journal.path_for(run_dir / out_name)
    report = evaluate(run.classifier, x, y, eps=cfg.eps, norm=cfg.norm, num_classes=ds.num_classes, config=config,
                      surrogate=surrogate.classifier if surrogate else None, surrogate_name=name or "surrogate",
                      progress=progress, log=log, journal_path=journal_path)
    report["run"] = {"dir": str(run_dir), "dataset": cfg.dataset, "method": cfg.method, "model": cfg.model,
                     "seed": cfg.seed, "trained_eps": cfg.eps, "finished": bool(run.summary)}
    # what evaluated it and when: a study's cells are evaluated on many machines over days
    report["environment"], report["date"] = engine.environment(torch.device(device)), datetime.date.today().isoformat()
    if surrogate is not None:
        report["surrogate"] = {"dir": str(surrogate_dir), "method": surrogate.config.method,
                               "model": surrogate.config.model, "seed": surrogate.config.seed}
    runs.write_json(run_dir / out_name, report)
    journal_path.unlink(missing_ok=True)  # the report holds all of it now
    plots.robustness_vs_eps({f"{cfg.method} (seed {cfg.seed})": report["sweep"]}, run_dir / "eval_eps.png",
                            title=f"{cfg.dataset}: PGD-{config.sweep_steps} accuracy over {cfg.norm} eps",
                            trained_eps=report["eps"])
    return report
