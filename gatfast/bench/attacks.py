"""PGD throughput: gatfast.attacks.PGD against torchattacks.PGD with the same model, test
images and budget (steps, step size, eps, random start), timed in the same run with the
two taking turns, and the robust accuracy each reaches printed beside its time (a faster
attack that is weaker would be no gain).

gatfast's PGD differs in two ways: each step is the fused pgd_step op, and a sample
leaves the batch once it is misclassified (its strongest point is kept), so the gain
grows with the share of samples the model does not resist. Both are reported per model.

`gatfast bench-pgd [--run RUN_DIR ...]` writes benchmarks/results/pgd-<cpu|gpu>.{json,md}.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from gatfast import attacks, train
from gatfast.bench.timing import provenance, save
from gatfast.train import data


def _standard_model(device, log):
    """An undefended small CNN trained for 2 epochs on mnist5k (when no run is given)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = train.TrainConfig(dataset="mnist5k", method="standard", epochs=2, eval_pgd_steps=0, progress=False,
                                   device=str(device))
        train.train(config, Path(tmp) / "run", log=lambda *_: None)
        log("trained an undefended small CNN (standard, 2 epochs) on mnist5k")
        return train.load_run(Path(tmp) / "run", device).classifier, config


def compare(model, x, y, *, eps, norm="linf", steps=40, rounds=3, batch_size=500, sync=lambda: None):
    import torchattacks

    step_size = 2.5 * eps / steps
    ours = attacks.PGD(model, eps=eps, norm=norm, steps=steps, step_size=step_size, batch_size=batch_size)
    kind = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    theirs = kind(model, eps=eps, alpha=step_size, steps=steps, random_start=True)

    def run_theirs():
        return torch.cat([theirs(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)])

    times = {"torchattacks": [], "gatfast": []}
    acc = {}
    model.eval()
    for _ in range(rounds):
        for name, fn in (("torchattacks", run_theirs), ("gatfast", lambda: ours(x, y))):
            sync()
            t0 = time.perf_counter()
            x_adv = fn()
            sync()
            times[name].append(time.perf_counter() - t0)
            acc[name] = train.accuracy(model, x_adv, y)
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"seconds": median, "accuracy": acc, "speedup": median["torchattacks"] / median["gatfast"],
            "clean": train.accuracy(model, x, y)}


def run(run_dirs=(), device=None, steps=40, rounds=3, out_dir="benchmarks/results", log=print) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    models = []
    for run_dir in run_dirs:
        r = train.load_run(run_dir, device)
        models.append((f"{Path(run_dir).name} ({r.config.method}, {r.config.dataset})", r.classifier, r.config))
    if not models:
        model, config = _standard_model(device, log)
        models.append(("standard, 2 epochs (mnist5k)", model, config))
    rows = []
    for label, model, config in models:
        x, y = (t.to(device) for t in data.load_dataset(config.dataset, config.data_root).test.tensors)
        result = compare(model, x, y, eps=config.eps, norm=config.norm, steps=steps, rounds=rounds, sync=sync)
        row = {"model": label, "images": len(y), "eps": config.eps, "norm": config.norm, "steps": steps, **result}
        rows.append(row)
        log(f"{label}: torchattacks {result['seconds']['torchattacks']:.1f} s (robust "
            f"{result['accuracy']['torchattacks']:.1%}), gatfast {result['seconds']['gatfast']:.1f} s (robust "
            f"{result['accuracy']['gatfast']:.1%}): {result['speedup']:.2f}x")
    out = {**provenance(device), "rounds": rounds, "statistic": "median over rounds, the two taking turns",
           "rows": rows}
    if out_dir:
        _write(out, Path(out_dir), device)
    return out


def _write(result, out_dir: Path, device):
    lines = [f"# PGD over a test set on {result['device']}", "",
             f"{result['date']}, torch {result['torch']}, gatfast {result['gatfast']}; median of {result['rounds']} "
             f"rounds, torchattacks and gatfast taking turns; same model, images, eps, steps, step size 2.5 eps / "
             f"steps and random start. gatfast drops a sample once it is misclassified.", "",
             "| model | images | eps | steps | clean | torchattacks s (robust) | gatfast s (robust) | speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        s, a = r["seconds"], r["accuracy"]
        lines.append(f"| {r['model']} | {r['images']} | {r['eps']:g} {r['norm']} | {r['steps']} | {r['clean']:.1%} | "
                     f"{s['torchattacks']:.1f} ({a['torchattacks']:.1%}) | {s['gatfast']:.1f} ({a['gatfast']:.1%}) | "
                     f"{r['speedup']:.2f}x |")
    save(result, lines, out_dir, "pgd", device)


# ---- AutoAttack: gatfast's cascade against torchattacks' -----------------------------------

AUTOATTACK_VARIANTS = ("torchattacks", "torchattacks-100", "gatfast")


def _torchattacks_autoattack(model, eps, norm, n_classes, steps):
    """torchattacks.AutoAttack standard as shipped (steps None: its members' default of 10),
    or the same four members built with torchattacks' public classes, APGD, APGD-T and FAB-T
    at `steps`, in its MultiAttack cascade (the wrapper has no option for the steps)."""
    import torchattacks

    tnorm = "Linf" if norm == "linf" else "L2"
    if steps is None:
        return torchattacks.AutoAttack(model, norm=tnorm, eps=eps, version="standard", n_classes=n_classes, seed=0)
    common = dict(eps=eps, norm=tnorm, seed=0, n_restarts=1)
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, loss="ce", steps=steps, **common),
        torchattacks.APGDT(model, n_classes=n_classes, steps=steps, **common),
        torchattacks.FAB(model, multi_targeted=True, n_classes=n_classes, steps=steps, **common),
        torchattacks.Square(model, n_queries=5000, **common),
    ])


def compare_autoattack(model, x, y, *, eps, norm, n_classes, variants=AUTOATTACK_VARIANTS, batch_size=250,
                       log=print) -> dict:
    """Each variant once over the same images, one after the other: seconds and robust
    accuracy (an AutoAttack run is minutes long, so one round; run it alone)."""
    from gatfast.attacks.base import evaluating

    unknown = [v for v in variants if v not in AUTOATTACK_VARIANTS]
    if unknown:
        raise train.ConfigError(f"unknown AutoAttack variant {unknown[0]!r}; choose from "
                                f"{', '.join(AUTOATTACK_VARIANTS)}")
    out = {}
    for name in variants:
        if name == "gatfast":
            attack = attacks.AutoAttack(model, eps=eps, norm=norm, n_classes=n_classes, batch_size=batch_size)
            fn = lambda: attack(x, y)  # noqa: E731
        else:
            aa = _torchattacks_autoattack(model, eps, norm, n_classes, 100 if name.endswith("-100") else None)

            def fn(aa=aa):
                with evaluating(model):  # the same eval mode and channels-last as gatfast's attacks
                    return torch.cat([aa(x[i:i + batch_size], y[i:i + batch_size])
                                      for i in range(0, len(y), batch_size)])
        t0 = time.perf_counter()
        x_adv = fn()
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": seconds, "accuracy": train.accuracy(model, x_adv, y)}
        if name == "gatfast":  # where its time goes, member by member
            out[name]["member_seconds"] = {k: round(v, 1) for k, v in attack.seconds.items()}
        log(f"  {name:<18} robust {out[name]['accuracy']:6.1%}  {seconds:7.1f} s"
            + (f"  ({', '.join(f'{k} {v:.0f} s' for k, v in out[name]['member_seconds'].items())})"
               if "member_seconds" in out[name] else ""))
    return out


def run_autoattack(run_dir, device=None, n=1000, variants=AUTOATTACK_VARIANTS, out_dir="benchmarks/results",
                   log=print) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    r = train.load_run(run_dir, device)
    ds = data.load_dataset(r.config.dataset, r.config.data_root)
    x, y = (t[:n].to(device) for t in ds.test.tensors)
    label = f"{Path(run_dir).name} ({r.config.method}, {r.config.dataset})"
    log(f"{label}: AutoAttack standard on {len(y)} test images, eps {r.config.eps:g} {r.config.norm}")
    result = compare_autoattack(r.classifier, x, y, eps=r.config.eps, norm=r.config.norm,
                                n_classes=ds.num_classes, variants=variants, log=log)
    out = {**provenance(device), "model": label, "images": len(y), "eps": r.config.eps, "norm": r.config.norm,
           "clean": train.accuracy(r.classifier, x, y), "variants": result}
    if out_dir:
        lines = [f"# AutoAttack standard on {out['device']}", "",
                 f"{out['date']}, torch {out['torch']}, gatfast {out['gatfast']}; {label}, the first {len(y)} test "
                 f"images (clean {out['clean']:.1%}), eps {out['eps']:g} {out['norm']}; each variant once, one after "
                 f"the other, alone on the machine.", "",
                 "- torchattacks: `torchattacks.AutoAttack(version='standard')` as shipped (3.5.1: its APGD, APGD-T "
                 "and FAB-T take their default of 10 steps);",
                 "- torchattacks-100: the same four members built from torchattacks' classes (APGD, APGDT, FAB "
                 "multi-targeted, Square) with AutoAttack's published 100 steps, in its `MultiAttack` cascade;",
                 "- gatfast: `gatfast.attacks.AutoAttack` (100 steps; gatfast's APGD and APGD-T, torchattacks' FAB-T "
                 "and Square).", "",
                 "| variant | robust accuracy | seconds |", "|---|---|---|"]
        lines += [f"| {k} | {v['accuracy']:.1%} | {v['seconds']:.0f} |" for k, v in result.items()]
        if "member_seconds" in result.get("gatfast", {}):
            lines += ["", "gatfast's members, each on the images the earlier ones left: " + ", ".join(
                f"{k} {v:.0f} s" for k, v in result["gatfast"]["member_seconds"].items()) + "."]
        save(out, lines, Path(out_dir), "autoattack", device)
    return out
