"""Step throughput: samples per second of one GAT update, every variant measured in the
same run so the ratios compare like with like.

Variants (all the same one-step GAT algorithm, generator input "image+grad"):
  literal          gatfast.gat.reference.gat_step_literal: alternating updates, ~4 fwd + 3 bwd
  literal+compile  torch.compile of the literal step
  fused-eager      GATStep with the plain-PyTorch `torch` backend: 2 fwd + 2 bwd, no custom op
  gatstep          GATStep with gatfast's ops (backend auto)
  gatstep+bf16     the same under bf16 autocast
  gatstep+bf16+graph  and captured in a CUDA graph (GPU only)
  image-two-pass   GATStep with a generator that reads the image alone (input "image")
  image-single-pass  the same generator, one forward over cat(x, x_adv) and one backward of
                   the fused clean_adv_loss (single_pass=True); the pair measures that op's path
  image-single-pass+bf16+graph, image-two-pass+bf16+graph  (GPU only)

`gatfast bench` (or benchmarks/step_throughput.py) writes benchmarks/results/step-<device>.json
and .md. Ratios are against `literal` of the same model and batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from gatfast.bench.timing import provenance, save
from gatfast.gat import GATStep, PerturbationGenerator, reference
from gatfast.ops import backends
from gatfast.train import models

EPS = 0.3
MODELS = ("small_cnn", "preact_resnet18")
VARIANTS = ("literal", "literal+compile", "fused-eager", "gatstep", "gatstep+bf16", "gatstep+bf16+graph",
            "image-two-pass", "image-single-pass", "image-two-pass+bf16+graph", "image-single-pass+bf16+graph")


def _networks(model: str, device, generator_input="image+grad"):
    torch.manual_seed(0)
    if model == "small_cnn":
        clf, channels, size = models.SmallCNN(), 1, 28
    else:
        clf, channels, size = models.PreActResNet18(), 3, 32
    gen = PerturbationGenerator(channels, EPS, input=generator_input, width=32, blocks=1)
    return clf.to(device), gen.to(device), (channels, size, size)


def _adam(module, capturable=False):
    return torch.optim.Adam(module.parameters(), lr=1e-4, capturable=capturable)


def _variants(model, device, cuda):
    def literal():
        clf, gen, shape = _networks(model, device)
        oc, og = _adam(clf), _adam(gen)
        return lambda x, y: reference.gat_step_literal(clf, gen, oc, og, x, y, EPS, "linf", 0.5, 0.0), shape

    def literal_compiled():
        step, shape = literal()
        return torch.compile(step), shape

    def gatstep(backend="auto", amp=None, graph=False, generator_input="image+grad", single_pass=False):
        def make():
            clf, gen, shape = _networks(model, device, generator_input)
            step = GATStep(clf, gen, _adam(clf, graph), _adam(gen, graph), eps=EPS, alpha=0.5, amp=amp,
                           cuda_graph=graph, single_pass=single_pass)

            def run(x, y):
                with backends.use_backend(backend):
                    return step.step(x, y)
            return run, shape
        return make

    out = {"literal": literal, "literal+compile": literal_compiled, "fused-eager": gatstep("torch"),
           "gatstep": gatstep(), "gatstep+bf16": gatstep(amp="bf16"),
           "image-two-pass": gatstep(generator_input="image"),
           "image-single-pass": gatstep(generator_input="image", single_pass=True)}
    if cuda:
        out["gatstep+bf16+graph"] = gatstep(amp="bf16", graph=True)
        out["image-two-pass+bf16+graph"] = gatstep(amp="bf16", graph=True, generator_input="image")
        out["image-single-pass+bf16+graph"] = gatstep(amp="bf16", graph=True, generator_input="image",
                                                      single_pass=True)
    return out


def _batch(shape, batch, device):
    g = torch.Generator(device).manual_seed(1)
    return (torch.rand(batch, *shape, device=device, generator=g),
            torch.randint(0, 10, (batch,), device=device, generator=g))


def _time_interleaved(steps: dict, batch, device, warmup, iters):
    """Median step time of each variant. The variants take turns, one step each per round,
    so a change in the machine's load hits all of them alike instead of the last ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    inputs = {name: _batch(shape, batch, device) for name, (_, shape) in steps.items()}
    for name, (step, _) in steps.items():
        for _ in range(warmup):
            step(*inputs[name])
    times = {name: [] for name in steps}
    for _ in range(iters):
        for name, (step, _) in steps.items():
            sync()
            t0 = time.perf_counter()
            step(*inputs[name])
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def run(device: str | None = None, cases=None, warmup: int = 3, iters: int = 10, out_dir="benchmarks/results",
        log=print, variants=None) -> dict:
    """cases: [(model, batch)]; variants: names to run (default all that fit the device)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    # Chosen cases get their own file, so that one run per model (as the GPU check makes)
    # does not overwrite another.
    stem = "step" if cases is None else "step-" + "-".join(sorted({model for model, _ in cases}))
    if cases is None:
        cases = [("small_cnn", 256), ("preact_resnet18", 256)] if cuda else [("small_cnn", 128)]
    rows = []
    for model, batch in cases:
        steps = {}
        for name, make in _variants(model, device, cuda).items():
            if variants is not None and name not in variants:
                continue
            try:
                step, shape = make()
                step(*_batch(shape, batch, device))  # fail here, not inside the timed rounds
                steps[name] = (step, shape)
            except Exception as e:  # a variant that cannot run here is reported, not hidden
                log(f"{model} b{batch} {name}: failed: {type(e).__name__}: {e}")
                rows.append({"model": model, "batch": batch, "variant": name, "error": f"{type(e).__name__}: {e}"})
        seconds = _time_interleaved(steps, batch, device, warmup, iters)
        base = seconds.get("literal")
        for name, sec in seconds.items():
            row = {"model": model, "batch": batch, "variant": name, "step_ms": round(sec * 1e3, 3),
                   "samples_per_s": round(batch / sec, 1), "vs_literal": round(base / sec, 3) if base else None}
            rows.append(row)
            log(f"{model} b{batch} {name:>20}: {row['step_ms']:9.2f} ms  {row['samples_per_s']:10.1f} samples/s  "
                f"{row['vs_literal']}x literal")
    result = {**provenance(device), "warmup": warmup, "iters": iters,
              "statistic": "median step time, variants interleaved", "rows": rows}
    if out_dir:
        _write(result, Path(out_dir), device, stem)
    return result


def _write(result, out_dir: Path, device, stem="step"):
    lines = [f"# GAT step throughput on {result['device']}", "",
             f"{result['date']}, torch {result['torch']}, gatfast {result['gatfast']}; median of {result['iters']} "
             f"steps after {result['warmup']} warm-up steps, the variants taking turns step by step; ratios against "
             f"the literal step in the same run. Generator: image+grad input (the image alone in the image-* "
             f"variants), width 32, one block, full size, "
             f"one step (the literal algorithm's).", "",
             "| model | batch | variant | ms / step | samples / s | vs literal |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['variant']} | failed: {r['error'][:60]} | | |")
        else:
            lines.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {r['step_ms']:.2f} | "
                         f"{r['samples_per_s']:.0f} | {r['vs_literal']:.2f}x |")
    save(result, lines, out_dir, stem, device)

