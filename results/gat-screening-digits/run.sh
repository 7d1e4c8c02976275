#!/bin/bash
# issue 14: screening GAT variants on digits (eps 0.1, 20 epochs, the study's setting) over
# three seeds, with a proxy evaluation: APGD-CE + APGD-T (100 steps) on all 359 test images,
# the per-image worst case of the two. Cheap (a cell trains in ~10 s and evaluates in well
# under a minute), so variants can be compared over seeds before the costly mnist5k runs.
# Resumes: a finished cell (proxy.txt with a worst case) is skipped.
# usage: [SEEDS="0 1 2"] [RUNS=runs/gat-screening-digits] run.sh NAME "TRAIN FLAGS" [NAME "FLAGS" ...]
# from the repository root, with its .venv built (make build). Then summary.py prints the table.
SEEDS=${SEEDS:-0 1 2}
GF=".venv/bin/python -m gatfast"
R=${RUNS:-runs/gat-screening-digits}
while [ $# -ge 2 ]; do
  name=$1; flags=$2; shift 2
  for seed in $SEEDS; do
    d=$R/$name/seed$seed
    if grep -qi "worst" $d/proxy.txt 2>/dev/null; then continue; fi
    echo "=== $name seed $seed: $flags  $(date +%T)"
    rm -rf $d
    $GF train --dataset digits --eps 0.1 --seed $seed --eval-pgd-steps 0 --no-progress $flags --out $d > /dev/null || exit 1
    $GF eval $d --attacks apgd_ce,apgd_t --n 359 --certified none --sweep 0.1 --sweep-steps 1 --no-progress \
      > $d/proxy.txt 2>&1 || { cat $d/proxy.txt; exit 1; }
  done
done
