"""`gatfast certify RUN`: verified accuracy of a run's classifier at a list of eps, with the
clean accuracy of the same images beside it, written whole to RUN/certify.json.

A verified image is one whose every margin logit_y - logit_j has a positive lower bound
over the whole ball (gatfast.certify): a lower bound on robust accuracy, where the attacks
of `gatfast eval` give an upper one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from gatfast import certify, train
from gatfast.train import data, runs


class CertifyError(train.ConfigError):
    """A setting `gatfast certify` cannot run with (the CLI: one line, exit 2)."""


def check_settings(eps_list, method: str, n: int, norm: str) -> tuple:
    """The eps values (each >= 0, <= 1 for linf), the method and n, checked before anything runs."""
    if not eps_list:
        raise CertifyError("eps: give at least one value")
    for e in eps_list:
        if not (isinstance(e, (int, float)) and math.isfinite(e) and e >= 0) or (norm == "linf" and e > 1):
            raise CertifyError(f"eps must be finite, >= 0 and (for linf) <= 1, got {e!r}")
    if method not in certify.METHODS:
        raise CertifyError(f"method must be one of {', '.join(certify.METHODS)}, got {method!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CertifyError(f"n must be an int >= 1, got {n!r}")
    return tuple(float(e) for e in eps_list)


def certify_run(run_dir, eps_list, *, method: str = "crown-ibp", n: int = 1000, device="cpu", data_root=None,
                log=None) -> dict:
    """Verified accuracy per eps on the first n test images; writes RUN_DIR/certify.json."""
    log = log or (lambda line: None)
    run = train.load_run(run_dir, device)
    eps_list = check_settings(eps_list, method, n, run.config.norm)
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
    runs.write_json(Path(run_dir) / "certify.json", report)
    return report


def format_table(report: dict) -> str:
    lines = [f"{'eps':>8}  {'clean':>7}  {'verified':>9}  {'seconds':>8}"]
    for r in report["rows"]:
        lines.append(f"{r['eps']:8g}  {report['clean']:7.1%}  {r['verified']:9.1%}  {r['seconds']:8.1f}")
    return "\n".join(lines)
