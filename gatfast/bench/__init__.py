"""Benchmarks the command line runs: `gatfast bench` (the GAT step's throughput, step.py)
and `gatfast bench-pgd` / `bench-autoattack` (attacks against torchattacks', attacks.py),
both reporting ratios against a baseline measured in the same run (timing.py)."""
