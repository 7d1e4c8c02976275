"""The evaluation layer: the attack suite with its per-image worst case and sanity checks
(suite.py), sweeps over datasets, methods and seeds (sweep.py, and the study's preset in
study.py), their report (report.py), and the plots. Depends on gatfast.train and gatfast.attacks."""

from gatfast.evaluation.suite import ATTACKS, EvalConfig, EvalError, evaluate, evaluate_run, format_table, mcnemar

__all__ = ["ATTACKS", "EvalConfig", "EvalError", "evaluate", "evaluate_run", "format_table", "mcnemar"]
