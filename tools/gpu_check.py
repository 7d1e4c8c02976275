"""The one-shot GPU check: build, test and benchmark everything that needs a GPU, in one
command, within a time budget, on a machine that is lent for minutes.

    python3 tools/gpu_check.py --out "$OUT"           # on the GPU machine (make gpu-check)
    GATFAST_GPU_CHECK_DRY=1 python3 tools/gpu_check.py --out /tmp/dry   # anywhere (CI runs it)

Stages run in order, each under its own time limit and the whole under --budget seconds;
a stage that fails or runs out of time is recorded and the check goes on to the next one,
so a late failure never loses the early results. --out receives three files: summary.md,
summary.json and gpu-check.tar.gz, which packs every stage's log, the gpu tests' JUnit
report and the results the benchmarks wrote (benchmarks/results/*); the GPU tool brings
back at most 8 files, so everything else is written to a work folder first. The summary is
printed last: one line per stage, then the ratios the targets are judged on.

The dry run (--dry-run or GATFAST_GPU_CHECK_DRY=1) runs the plumbing on the CPU: argument
parsing, the wheel installation into a target folder, pytest's collection of the gpu
tests and the benchmarks (so an import error shows here, not on the GPU), a one-step
step benchmark, the file writing and the summary. It builds nothing (the caller has).

This script imports nothing from gatfast at top level: it must run before the build.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WHEELS = ROOT / ".whl"  # git-ignored: the wheels the GPU machine lacks (benchmarks/README.md)
SITE = Path(tempfile.gettempdir()) / "gatfast-gpu-check-site"
DRY_ENV = "GATFAST_GPU_CHECK_DRY"
START_WALL = time.time()  # results older than this check are not its own


@dataclass
class Stage:
    name: str
    argv: list[str]
    limit_s: int
    env: dict = field(default_factory=dict)
    dry_argv: list[str] | None = None  # what the dry run runs instead (None: skipped)


@dataclass
class Outcome:
    name: str
    status: str  # passed, failed, timed out, skipped
    seconds: float
    log: str
    detail: str = ""


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _pytest_parallel() -> list[str]:
    """pytest-xdist's workers when it is there (the GPU machines have it): the Triton
    kernels' JIT compilation of the many gpu cases is the tests' slowest part."""
    try:
        import xdist  # noqa: F401
    except ImportError:
        return []
    return ["-n", str(min(8, os.cpu_count() or 1))]


def _cuda_arch() -> str:
    """The lent GPU's own architecture only ("9.0" on an H100/H200): a build for one
    target takes a fraction of the default list's time."""
    probe = "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')"
    try:
        return subprocess.run(_py("-c", probe), capture_output=True, text=True, timeout=60).stdout.strip() or "9.0"
    except subprocess.SubprocessError:
        return "9.0"


def stages(work: Path, dry: bool) -> list[Stage]:
    cores = str(os.cpu_count() or 1)
    versions = ("import sys, platform, torch; print('python', sys.version.split()[0], platform.machine()); "
                "print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); "
                "print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'); "
                "import triton; print('triton', triton.__version__); "
                "import importlib.util as u; "
                "[print(m, 'missing' if u.find_spec(m) is None else 'ok') for m in "
                "('triton', 'pytest', 'pytest_benchmark', 'expecttest', 'scipy', 'mlxtend', 'torchattacks')]")
    build_env = {"GATFAST_CUDA": "1", "MAX_JOBS": cores}
    if not dry:
        build_env["TORCH_CUDA_ARCH_LIST"] = _cuda_arch()
    built = ("import gatfast, json; info = gatfast.build_info(); print(json.dumps(info, indent=1)); "
             "assert info['cuda_kernels'], 'the CUDA kernels were not built'")
    pytest_common = ["-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    step_cases = {"small_cnn": "small_cnn:256", "preact_resnet18": "preact_resnet18:256"}
    runs = Path(tempfile.gettempdir()) / "gatfast-gpu-check-runs"
    return [
        Stage("environment", _py("-c", versions), 60, dry_argv=_py("-c", versions)),
        Stage("wheels", _py(__file__, "--install-wheels"), 90, dry_argv=_py(__file__, "--install-wheels")),
        Stage("build", _py("-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", str(ROOT)),
              300, env=build_env),
        Stage("build-info", _py("-c", built), 60),
        Stage("gpu-tests", _py("-m", "pytest", *pytest_common, *_pytest_parallel(), "-m", "gpu",
                               f"--junitxml={work / 'gpu-tests.xml'}", "tests"), 240,
              dry_argv=_py("-m", "pytest", *pytest_common, "-m", "gpu", "--collect-only", "tests")),
        Stage("bench-ops", _py("-m", "pytest", *pytest_common, "benchmarks/bench_ops.py"), 150,
              dry_argv=_py("-m", "pytest", *pytest_common, "--collect-only", "benchmarks/bench_ops.py")),
        # The dry run times one tiny case once: the second model's stage differs only in --case.
        *[Stage(f"bench-step-{model}", _py("-m", "gatfast", "bench", "--device", "cuda", "--case", case,
                                           "--out", str(RESULTS)), 240,
                dry_argv=None if i else _py("-m", "gatfast", "bench", "--device", "cpu", "--case", "small_cnn:8",
                                            "--iters", "1", "--warmup", "0", "--variants", "literal,gatstep",
                                            "--out", str(work / "dry-results")))
          for i, (model, case) in enumerate(step_cases.items())],
        Stage("bench-pgd", _py(__file__, "--bench-pgd", str(runs)), 240),
    ]


def install_wheels() -> int:
    """Install the carried wheels into a target folder that later stages put on
    PYTHONPATH (the GPU machine has no internet; its own site-packages stay as they are)."""
    wheels = sorted(glob.glob(str(WHEELS / "*.whl")))
    if not wheels:
        print(f"no wheels in {WHEELS}: nothing to install")
        return 0
    SITE.mkdir(parents=True, exist_ok=True)
    cmd = _py("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
              "--upgrade", "--target", str(SITE), *wheels)
    print(" ".join(cmd))
    return subprocess.call(cmd)


def bench_pgd(runs: Path) -> int:
    """Train the models bench-pgd attacks (an undefended one and a GAT one, on mnist5k,
    a few epochs: enough for a model that resists), then time gatfast's PGD against
    torchattacks' on them."""
    runs.mkdir(parents=True, exist_ok=True)
    train = [("standard", "2"), ("gat", "5")]
    for method, epochs in train:
        code = subprocess.call(_py("-m", "gatfast", "train", "--dataset", "mnist5k", "--method", method, "--eps", "0.3",
                                   "--epochs", epochs, "--seed", "0", "--device", "cuda", "--eval-pgd-steps", "0",
                                   "--out", str(runs / method)))
        if code:
            return code
    return subprocess.call(_py("-m", "gatfast", "bench-pgd", "--device", "cuda", *sum([["--run", str(runs / m)]
                                                                                     for m, _ in train], []),
                               "--out", str(RESULTS)))


def run_stage(stage: Stage, work: Path, deadline: float, dry: bool, env: dict) -> Outcome:
    argv = stage.dry_argv if dry else stage.argv
    log = work / f"{stage.name}.log"
    if argv is None:
        return Outcome(stage.name, "skipped", 0.0, log.name, "dry run")
    left = deadline - time.monotonic()
    if left < 5:
        return Outcome(stage.name, "skipped", 0.0, log.name, "no time left in the budget")
    limit = min(stage.limit_s, left)
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, env={**env, **stage.env}, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the whole group: pytest's workers, nvcc, compile workers
            proc.wait()
            return Outcome(stage.name, "timed out", time.monotonic() - start, log.name, f"limit {limit:.0f} s")
    seconds = time.monotonic() - start
    return Outcome(stage.name, "passed" if code == 0 else "failed", seconds, log.name,
                   "" if code == 0 else f"exit {code}: {_last_line(log)}")


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _load(pattern: str) -> list[dict]:
    """The JSON results matching pattern that this check wrote (older ones are skipped)."""
    out = []
    for path in sorted(glob.glob(pattern)):
        if os.path.getmtime(path) < START_WALL:
            continue
        try:
            out.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            continue
    return out


def ratios(results: Path) -> list[str]:
    """The figures the targets are judged on, from the results the benchmarks wrote."""
    lines = []
    for ops in _load(str(results / "ops-gpu-*.json")):
        for r in ops["rows"]:
            if r.get("copy_share") is not None and r["backend"] in ("cuda", "triton", "auto"):
                lines.append(f"ops  {r['op']:<16} {r['case']:<14} {r['direction']:<8} {r['backend']:<7} "
                             f"{r['copy_share']:.0%} of copy, {r['speedup']:.2f}x eager")
    for step in _load(str(results / "step*.json")):
        for r in step.get("rows", []):
            if "error" in r:
                lines.append(f"step {r['model']} b{r['batch']} {r['variant']}: {r['error'][:120]}")
            else:
                lines.append(f"step {r['model']:<16} b{r['batch']:<4} {r['variant']:<20} {r['vs_literal']}x literal")
    for pgd in _load(str(results / "pgd-*.json")):
        for r in pgd.get("rows", []):
            lines.append(f"pgd  {json.dumps(r)[:160]}")
    return lines


def provenance(dry: bool) -> dict:
    probe = ("import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
             "'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}))")
    try:
        info = json.loads(subprocess.run(_py("-c", probe), capture_output=True, text=True, timeout=60).stdout)
    except (subprocess.SubprocessError, ValueError):
        info = {}
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": sys.version.split()[0], "dry_run": dry, **info}


def write_summary(outs: list[Path], outcomes: list[Outcome], meta: dict, results: Path) -> str:
    lines = [f"# gatfast GPU check: {meta.get('device', '?')}", "",
             f"{meta['date']}; torch {meta.get('torch')} (CUDA {meta.get('cuda')}); Python {meta['python']}"
             + ("; DRY RUN" if meta["dry_run"] else ""), "",
             "| stage | result | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {o.name} | {o.status} | {o.seconds:.0f} | {o.detail} |" for o in outcomes]
    figures = ratios(results)
    if figures:
        lines += ["", "```", *figures, "```"]
    text = "\n".join(lines) + "\n"
    summary = json.dumps({"meta": meta, "stages": [o.__dict__ for o in outcomes], "figures": figures}, indent=1)
    for out in outs:
        _atomic_write(out / "summary.md", text)
        _atomic_write(out / "summary.json", summary)
    return text


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def collect(work: Path, results: Path, out: Path) -> None:
    """Copy what the benchmarks wrote into the work folder and pack it into one archive in out."""
    copied = work / "results"
    copied.mkdir(exist_ok=True)
    for pattern in ("ops-gpu-*", "step*", "pgd-*"):
        for path in glob.glob(str(results / pattern)):
            if os.path.getmtime(path) >= START_WALL:
                shutil.copy2(path, copied)
    tmp = out / "gpu-check.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(work)))
    os.replace(tmp, out / "gpu-check.tar.gz")



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"),
                   help="folder for the logs, results and summary (default: $OUT, else ./gpu-check-out)")
    p.add_argument("--budget", type=int, default=420, help="seconds for the whole check (default 420)")
    p.add_argument("--dry-run", action="store_true", default=os.environ.get(DRY_ENV, "") not in ("", "0"),
                   help=f"run the plumbing on the CPU (also {DRY_ENV}=1)")
    p.add_argument("--only", default="", help="comma-separated stage names to run (default: all)")
    p.add_argument("--install-wheels", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bench-pgd", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget < 30:
        p.error(f"--budget must be at least 30 seconds, got {args.budget}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.install_wheels:
        return install_wheels()
    if args.bench_pgd:
        return bench_pgd(args.bench_pgd)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    names = [stage.name for stage in stages(Path(tempfile.gettempdir()), dry=True)]  # the same names either way
    unknown = sorted(set(wanted) - set(names))
    if unknown:  # refused before anything is made or run
        print(f"--only: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(names)}")
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gatfast-gpu-check-"))
    plan = [stage for stage in stages(work, args.dry_run) if not wanted or stage.name in wanted]
    # Later stages import the carried wheels from SITE; unbuffered, so that a stage killed
    # at its limit leaves its output in the log.
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)}
    results = work / "dry-results" if args.dry_run else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    outcomes = []
    for stage in plan:
        outcome = run_stage(stage, work, deadline, args.dry_run, env)
        outcomes.append(outcome)
        print(f"[{time.monotonic() - deadline + args.budget:5.0f} s] {outcome.name}: {outcome.status} "
              f"({outcome.seconds:.0f} s) {outcome.detail}", flush=True)
    text = write_summary([work, out], outcomes, provenance(args.dry_run), results)
    collect(work, results, out)
    shutil.rmtree(work, ignore_errors=True)
    print("\n" + text)
    return 0 if all(o.status in ("passed", "skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
