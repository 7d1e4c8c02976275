"""Does the worst case of a study cell keep falling with more attack steps? Issue 14's
mnist5k gat seed 2 failed its more_steps_do_not_help check (PGD-500 broke 22 images the
100-step ensemble left standing); this runs PGD with APGD's schedule at more steps on the
images every attack of its evaluation left standing, and writes what each broke.

    .venv/bin/python results/study-mnist5k/convergence/probe.py RUN_DIR STEPS [STEPS ...]

RUN_DIR needs its checkpoint (a study cell's stays on the machine that trained it).
Writes convergence/<method>-seed<seed>.json beside this script after each probe (a
temporary file, renamed), so a run stopped part-way keeps what it finished."""

import json
import sys
import time
from pathlib import Path

import torch

from gatfast import attacks, train
from gatfast.evaluation import suite
from gatfast.train import data, runs

run_dir, steps = Path(sys.argv[1]), [int(s) for s in sys.argv[2:]]
run = train.load_run(run_dir, "cpu")
report = json.loads((run_dir / "eval.json").read_text())
x, y = data.load_dataset(run.config.dataset).test.tensors
# standing: every attack of the threat model left it correct (CW-L2 is another threat model)
outcomes = {k: torch.tensor(a["outcome"]) for k, a in report["attacks"].items() if k != "cw"}
standing = torch.ones(len(y), dtype=torch.bool)
for k, o in outcomes.items():
    standing &= o != suite.BROKEN
index = torch.nonzero(standing).squeeze(1)
print(f"{len(index)} images standing after every attack of the evaluation "
      f"(worst case {report['worst_case']['accuracy']:.1%})", flush=True)
found = {"run": str(run_dir), "standing": len(index), "worst_case": report["worst_case"]["accuracy"], "probes": []}
broken_any = torch.zeros(len(index), dtype=torch.bool)
for n in steps:
    start = time.perf_counter()
    attack = attacks.PGD(run.classifier, eps=run.config.eps, steps=n, seed=1, batch_size=250)
    x_adv = attack(x[index], y[index])
    with torch.no_grad():
        broken = torch.cat([run.classifier.eval()(x_adv[i:i + 500]).argmax(1) != y[index][i:i + 500]
                            for i in range(0, len(index), 500)])
    broken_any |= broken
    seconds = time.perf_counter() - start
    found["probes"].append({"attack": attack.describe(), "broke": int(broken.sum()), "seconds": round(seconds, 1),
                            "worst_case_with_it": (int(standing.sum()) - int(broken_any.sum())) / len(y)})
    print(f"{attack.name}: broke {int(broken.sum())} of the {len(index)} ({seconds:.0f} s); worst case with it "
          f"{found['probes'][-1]['worst_case_with_it']:.1%}", flush=True)
    out = Path(__file__).parent / f"{run.config.method}-seed{run.config.seed}.json"
    runs.write_json(out, found)  # after each probe: a stopped run keeps the probes it finished
    print(f"wrote {out}")
