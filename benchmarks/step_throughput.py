"""GAT step throughput (samples/s) of every variant against the literal step, measured in
the same run; the same as `gatfast bench`. Writes benchmarks/results/step-<device>.{json,md}.

    .venv/bin/python benchmarks/step_throughput.py [--device cuda] [--iters 20]
"""

import sys

from gatfast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench"] + sys.argv[1:]))
