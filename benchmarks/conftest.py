"""Collects the op benchmarks into a ratio table: for each (op, case, direction),
the eager chain's median time over each backend's, measured in the same run, plus
the bandwidth reached (bytes moved / time) and, on a GPU, its share of the
device-to-device copy bandwidth measured in the same run."""

import datetime
import json
import os

import torch

import gatfast
from gatfast.bench.timing import device_name

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _device_name():
    """The benchmarks' device: the GPU when there is one (gatfast's ops run there), else the CPU."""
    return device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _rows(benchmarks):
    per_call = {}
    for b in benchmarks:
        info = b.extra_info
        if "op" not in info:
            continue
        seconds = b.stats.median / info["inner"]
        per_call[(info["op"], info["case"], info["direction"], info["impl"])] = (seconds, info["bytes"])
    copy = {case: bytes_ / s for (op, case, _, _), (s, bytes_) in per_call.items() if op == "copy"}
    rows = []
    for (op, case, direction, impl), (seconds, bytes_) in sorted(per_call.items()):
        if impl in ("eager", "copy"):
            continue
        eager = per_call.get((op, case, direction, "eager"))
        gbps = bytes_ / seconds / 1e9
        rows.append(dict(
            op=op, case=case, direction=direction, backend=impl,
            eager_us=eager[0] * 1e6 if eager else None, us=seconds * 1e6,
            speedup=eager[0] / seconds if eager else None, gbps=gbps,
            copy_share=(bytes_ / seconds) / copy[case] if case in copy else None,
        ))
    return rows


def _markdown(rows, meta):
    lines = [f"# Op benchmarks: {meta['device']}", "",
             f"{meta['date']}; torch {meta['torch']}; gatfast {meta['gatfast']}; "
             f"`{meta['command']}`. Speed-up = eager time / op time, both measured in this run.", "",
             "| op | case | direction | backend | eager (us) | op (us) | speed-up | GB/s | share of copy bandwidth |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        fmt = lambda v, spec: "" if v is None else format(v, spec)
        lines.append(f"| {r['op']} | {r['case']} | {r['direction']} | {r['backend']} | {fmt(r['eager_us'], '.1f')} | "
                     f"{r['us']:.1f} | {fmt(r['speedup'], '.2f')}x | {r['gbps']:.1f} | {fmt(r['copy_share'], '.0%')} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is None or not bench_session.benchmarks:
        return
    rows = _rows(bench_session.benchmarks)
    if not rows:
        return
    meta = dict(device=_device_name(), date=datetime.date.today().isoformat(), torch=torch.__version__,
                gatfast=gatfast.__version__, command="make bench", build=gatfast.build_info())
    os.makedirs(RESULTS, exist_ok=True)
    tag = "gpu-" + _device_name().replace(" ", "_") if torch.cuda.is_available() else "cpu"
    with open(os.path.join(RESULTS, f"ops-{tag}.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(os.path.join(RESULTS, f"ops-{tag}.md"), "w") as f:
        f.write(_markdown(rows, meta))
    print("\n" + _markdown(rows, meta))
