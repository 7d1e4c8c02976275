#!/bin/bash
# The headline study on digits (issue 14): the one command that starts it and resumes it,
# on this machine or another. This folder holds the cells' records (config, log, summary,
# eval.json) and is committed as cells finish; the checkpoints stay on the machine that
# trained them (.gitignore), and the study trains again only what it still needs.
# From the repository root, after `make build`, with nothing else running (wall time is a
# cost axis); extra flags pass through (--plan prints the order).
set -eo pipefail
mkdir -p runs
.venv/bin/python -m gatfast study --datasets digits --out results/study-digits --no-progress "$@" \
  2>&1 | tee -a runs/study-digits.log
