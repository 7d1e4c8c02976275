#!/bin/bash
# issue 14: screening GAT recipes on mnist5k eps 0.3, 20 epochs; proxy evaluation
# APGD-CE + APGD-T (100 steps) on the first 500 test images. One thread (a second queue may
# hold the other core). Resumes: a finished variant (eval.json) is skipped.
# usage: [SEED=0] [RUNS=runs/gat-exp] run.sh NAME "TRAIN FLAGS" [NAME "FLAGS" ...]
# from the repository root, with its .venv built (make build).
export OMP_NUM_THREADS=1
SEED=${SEED:-0}
GF=".venv/bin/python -m gatfast"
R=${RUNS:-runs/gat-exp}
while [ $# -ge 2 ]; do
  name=$1; flags=$2; shift 2
  d=$R/$name
  if [ -f $d/eval.json ]; then echo "$name: done"; continue; fi
  echo "=== $name (seed $SEED): $flags  $(date +%T)"
  resume=""; [ -f $d/checkpoint.safetensors ] && resume="--resume"
  [ -f $d/summary.json ] || $GF train --dataset mnist5k --seed $SEED --eval-pgd-steps 0 --no-progress $flags --out $d $resume || exit 1
  $GF eval $d --attacks apgd_ce,apgd_t --n 500 --certified none --sweep 0.3 --sweep-steps 1 --no-progress > $d/proxy.txt 2>&1 || { cat $d/proxy.txt; exit 1; }
  grep -i "apgd\|clean\|worst" $d/proxy.txt | head -8
done
