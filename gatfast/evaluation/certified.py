"""`gatfast certify RUN`: verified accuracy of a run's classifier at a list of eps, with the
clean accuracy of the same images beside it, and for L2 runs randomized smoothing's
certified accuracy at a list of radii, written whole to RUN/certify.json.

A verified image is one whose every margin logit_y - logit_j has a positive lower bound
over the whole ball (gatfast.certify): a lower bound on robust accuracy, where the attacks
of `gatfast eval` give an upper one. Smoothing certifies another classifier, the smoothed
one (the majority vote under Gaussian noise), each radius with probability 1 - alpha.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gatfast import certify, train
from gatfast.ops import checks
from gatfast.train import data, runs


class CertifyError(train.ConfigError):
    """A setting `gatfast certify` cannot run with (the CLI: one line, exit 2)."""


def check_settings(eps_list, method: str, n: int, norm: str) -> tuple:
    """The eps values (each >= 0, <= 1 for linf), the method and n, checked before anything runs."""
    if not eps_list:
        raise CertifyError("eps: give at least one value")
    eps_list = tuple(_rule(checks.nonnegative, e, "eps") for e in eps_list)
    for e in eps_list:
        if norm == "linf" and e > 1:
            raise CertifyError(f"eps {e:g} is beyond the [0, 1] pixel range for linf (did you mean {e:g}/255?)")
    if method not in certify.METHODS:
        raise CertifyError(f"method must be one of {', '.join(certify.METHODS)}, got {method!r}")
    _rule(checks.count, n, "n")
    return eps_list


@dataclass
class SmoothingSettings:
    """Randomized smoothing in `gatfast certify` (L2 runs): sigma None takes the run's."""
    sigma: float | None = None
    radii: tuple = (0.25, 0.5, 0.75, 1.0)
    images: int = 100       # the first test images smoothed (n noisy forwards each)
    n: int = 10_000         # 0: no smoothing
    n0: int = 100
    alpha: float = 0.001

    def validate(self) -> "SmoothingSettings":
        """Each setting by gatfast.ops.checks' rules, named by its flag (CertifyError)."""
        if self.sigma is not None:
            _rule(checks.positive, self.sigma, "sigma")
        if not self.radii:
            raise CertifyError("radii: give at least one value")
        for r in self.radii:
            _rule(checks.nonnegative, r, "radii")
        for name, minimum in (("images", 1), ("n", 0), ("n0", 1)):
            _rule(checks.count, getattr(self, name), f"smoothing-{name}", minimum)
        if not 0 < _rule(checks.finite, self.alpha, "alpha") < 0.5:
            raise CertifyError(f"alpha must be in (0, 0.5), got {self.alpha!r}")
        return self


def _rule(check, *args):
    return checks.raising(CertifyError, check, *args)


def _smoothing_report(model, x, y, settings: SmoothingSettings, sigma: float, log) -> dict:
    start = time.perf_counter()
    result = certify.smoothed_certify(model, x, y, sigma, n0=settings.n0, n=settings.n, alpha=settings.alpha,
                                      progress=True)
    rows = [{"radius": float(r), "certified": result.accuracy_at(r)} for r in settings.radii]
    seconds = round(time.perf_counter() - start, 3)
    for r in rows:
        log(f"  smoothed, sigma {sigma:g}, L2 radius {r['radius']:g}: certified {r['certified']:6.1%}")
    return {"sigma": sigma, "n": settings.n, "n0": settings.n0, "alpha": settings.alpha, "images": len(y),
            "abstained": float((result.prediction == certify.smoothing.ABSTAIN).float().mean()),
            "rows": rows, "seconds": seconds,
            "meaning": "certified: the share of images that the smoothed classifier gets right with a certified "
                       "L2 radius of at least that (Cohen et al. 2019; each radius holds with probability 1 - alpha)"}


def certify_run(run_dir, eps_list, *, method: str = "crown-ibp", n: int = 1000, device="cpu", data_root=None,
                log=None, smoothing: SmoothingSettings | None = None) -> dict:
    """Verified accuracy per eps on the first n test images, and for an L2 run randomized
    smoothing (unless smoothing.n is 0) on the first smoothing.images; writes RUN_DIR/certify.json."""
    log = log or (lambda line: None)
    run = train.load_run(run_dir, device)
    eps_list = check_settings(eps_list, method, n, run.config.norm)
    smoothing = (smoothing or SmoothingSettings()).validate()
    ds = data.load_dataset(run.config.dataset, data_root or run.config.data_root)
    x, y = (t[:n].to(device) for t in ds.test.tensors)
    model = run.classifier
    rows = []
    for eps in eps_list:
        start = time.perf_counter()
        verified = certify.verified(model, x, y, eps, norm=run.config.norm, method=method)
        rows.append({"eps": eps, "verified": float(verified.float().mean()), "seconds": round(time.perf_counter() -
                                                                                            start, 3)})
        log(f"  {method} at {run.config.norm} eps {eps:g}: verified {rows[-1]['verified']:6.1%} "
            f"({rows[-1]['seconds']:.1f} s)")
    report = {"run": str(run_dir), "dataset": run.config.dataset, "method_trained": run.config.method,
              "norm": run.config.norm, "trained_eps": run.config.eps, "bound": method, "n": len(y),
              "clean": train.accuracy(model, x, y), "rows": rows,
              "meaning": "verified: the share of images whose every margin has a positive lower bound over the "
                         "whole ball (a lower bound on robust accuracy; the attacks of gatfast eval give an upper one)"}
    if run.config.norm == "l2" and smoothing.n > 0:
        sigma = smoothing.sigma if smoothing.sigma is not None else run.config.sigma
        k = min(smoothing.images, len(y))
        report["smoothing"] = _smoothing_report(model, x[:k], y[:k], smoothing, sigma, log)
    runs.write_json(Path(run_dir) / "certify.json", report)
    return report


def format_table(report: dict) -> str:
    lines = [f"{'eps':>8}  {'clean':>7}  {'verified':>9}  {'seconds':>8}"]
    for r in report["rows"]:
        lines.append(f"{r['eps']:8g}  {report['clean']:7.1%}  {r['verified']:9.1%}  {r['seconds']:8.1f}")
    if "smoothing" in report:
        sm = report["smoothing"]
        lines.append(f"\nrandomized smoothing, sigma {sm['sigma']:g}, n {sm['n']}, alpha {sm['alpha']:g}, first "
                     f"{sm['images']} test images ({sm['abstained']:.1%} abstained, {sm['seconds']:.1f} s)")
        lines.append(f"{'L2 radius':>10}  {'certified':>9}")
        lines.extend(f"{r['radius']:10g}  {r['certified']:9.1%}" for r in sm["rows"])
    return "\n".join(lines)
