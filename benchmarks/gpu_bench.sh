#!/usr/bin/env bash
# Issue #5's GPU benchmark, unattended, in one call of at most ~9 minutes on an H100/H200.
#
#   bash benchmarks/gpu_bench.sh            (from the repository root; results in $OUT or ./bench-results)
#
# 1. installs diffusers + pydantic from ./.whl (the GPU host has torch, transformers, accelerate but
#    neither of those; fetch them here first with /work/shared/device/fetch-wheels.sh and carry .whl);
#    then benchmarks/overlap_run_check.py: `svdflow run` on builtin:tiny with overlap_decode on
#    and off, every job's frames compared (~30 s);
# 2. `svdflow bench --variant xt`: balanced, low-vram, seed-offload, max-speed, low-vram-batched-cfg
#    in that order (what is least known first) in one process, on an EMPTY inductor cache, so
#    max-speed's first video is a cold (regional) compile; balanced and max-speed each add three
#    videos with overlap_decode;
# 3. a second process on the now-warm cache: `--cases compile-start` (time to the first compiled step);
# 4. with the time left: a third process for seed-offload-lowmem and max-speed-fullgraph (the
#    whole-UNet compile, for comparison with the regional one);
# 5. a short table of everything, last.
#
# Expected, from the 2026-11-26 H200 runs (benchmarks/results/): install+imports ~15 s, balanced
# ~110 s (50 of them overlapped videos), low-vram ~60 s (if ~1 s/step), seed-offload ~45 s,
# max-speed ~155 s (69 s compiling, 40 overlapped), low-vram-batched-cfg ~50 s, warm start ~37 s;
# then step 4 with what is left (seed-offload-lowmem ~50 s, max-speed-fullgraph ~180 s).
# Guards: everything stops by SVDFLOW_BENCH_BUDGET s (default 550); no case of step 2 starts after
# SVDFLOW_BENCH_DEADLINE s (default 390); bench.json is rewritten after every case.
#
# Knobs: SVDFLOW_BENCH_CASES (step 2's comma list), SVDFLOW_BENCH_VIDEOS (default 2; max-speed does
# one more), SVDFLOW_BENCH_DEADLINE, SVDFLOW_BENCH_BUDGET, SVDFLOW_BENCH_SKIP_WARM=1,
# SVDFLOW_BENCH_EXTRA (step 4's cases, default "seed-offload-lowmem,max-speed-fullgraph"; "" skips),
# SVDFLOW_BENCH_VARIANT, SVDFLOW_BENCH_CHECK_ARGS (extra arguments for overlap_run_check.py, e.g.
# "--size 64x112 --frames 4 --steps 2" for a CPU dry run).
set -uo pipefail

# Few files come back from a device call (8 did last time): $OUT gets bench.json, compile_warm.json,
# extra.json, summary.json, env.txt and logs.txt; the raw logs stay in $LOGS.
OUT="${OUT:-$PWD/bench-results}"
LOGS=/tmp/svdflow-bench-logs
mkdir -p "$OUT" "$LOGS"
keep_log() { { echo "===== $1"; grep -v "should be kept in float32\|cannot run with \`cpu\` device" "$2"; } >> "$OUT/logs.txt"; }
CASES="${SVDFLOW_BENCH_CASES:-balanced,low-vram,seed-offload,max-speed,low-vram-batched-cfg}"
EXTRA="${SVDFLOW_BENCH_EXTRA-seed-offload-lowmem,max-speed-fullgraph}"
VIDEOS="${SVDFLOW_BENCH_VIDEOS:-2}"
DEADLINE="${SVDFLOW_BENCH_DEADLINE:-390}"
BUDGET="${SVDFLOW_BENCH_BUDGET:-550}"
VARIANT="${SVDFLOW_BENCH_VARIANT:-xt}"
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
left() { echo $(( BUDGET - $(elapsed) )); }

# --- 1. packages ----------------------------------------------------------------------------------
if ! python3 -c "import diffusers, pydantic" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "error: diffusers/pydantic are missing and there is no ./.whl; run /work/shared/device/fetch-wheels.sh" \
         "here and carry .whl to this machine" >&2
    exit 3
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>&1 | tee "$OUT/env.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$OUT/env.txt"
echo "[$(elapsed) s] packages ready"

# --- 1b. the run path with overlap_decode: byte-identical frames through the real executor ---------
# shellcheck disable=SC2086  # SVDFLOW_BENCH_CHECK_ARGS is a list of arguments
timeout -k 5 90 python3 benchmarks/overlap_run_check.py --json "$LOGS/overlap_check.json" \
  ${SVDFLOW_BENCH_CHECK_ARGS:-} > "$LOGS/overlap_check.txt" 2> "$LOGS/overlap_check.log"
rc=$?
echo "[$(elapsed) s] overlap run check exited $rc (0: every job's frames identical with and without overlap)" \
  | tee -a "$OUT/logs.txt"
keep_log overlap-check "$LOGS/overlap_check.log"

# An empty cache outside $OUT (nothing large comes back): the first process compiles cold, the second
# finds everything there.
export TORCHINDUCTOR_CACHE_DIR=/tmp/svdflow-bench-inductor
export TRITON_CACHE_DIR="$TORCHINDUCTOR_CACHE_DIR/triton"
rm -rf "$TORCHINDUCTOR_CACHE_DIR"

# --- 2. the main cases in one process ------------------------------------------------------------
t0=$(date +%s.%N)
# Past its deadline a case still finishes: the process may run to 60 s before the budget's end.
timeout -k 10 "$(( $(left) - 60 ))" python3 -m svdflow bench --variant "$VARIANT" --cases "$CASES" \
  --videos "$VIDEOS" --kernels --deadline "$DEADLINE" --json "$OUT/bench.json" > "$LOGS/bench.txt" 2> "$LOGS/bench.log"
rc=$?
t1=$(date +%s.%N)
echo "[$(elapsed) s] bench exited $rc after $(python3 -c "print(round($t1 - $t0, 1))") s" | tee -a "$OUT/logs.txt"
keep_log bench "$LOGS/bench.log"
grep "^bench: " "$LOGS/bench.log"

# --- 3. warm-cache compile start in a fresh process -----------------------------------------------
if [ "${SVDFLOW_BENCH_SKIP_WARM:-0}" != "1" ] && [ "$(left)" -gt 60 ]; then
  echo "inductor cache: $(du -sh "$TORCHINDUCTOR_CACHE_DIR" 2>/dev/null)" | tee -a "$OUT/env.txt"
  t0=$(date +%s.%N)
  timeout -k 10 "$(( $(left) < 110 ? $(left) - 10 : 100 ))" python3 -m svdflow bench --variant "$VARIANT" \
    --cases compile-start --json "$OUT/compile_warm.json" > "$LOGS/compile_warm.txt" 2> "$LOGS/compile_warm.log"
  rc=$?
  t1=$(date +%s.%N)
  echo "[$(elapsed) s] warm compile-start exited $rc; process wall $(python3 -c "print(round($t1 - $t0, 1))") s" \
    | tee -a "$OUT/logs.txt"
  keep_log compile-start "$LOGS/compile_warm.log"
  grep "^bench: " "$LOGS/compile_warm.log"
else
  echo "[$(elapsed) s] warm compile-start skipped"
fi

# --- 4. extra cases with the time left --------------------------------------------------------------
# Each only if there is time for it: the full-graph compile alone took 109-137 s on an H200.
need() { case "$1" in max-speed-fullgraph) echo 230 ;; *) echo 90 ;; esac; }
chosen=""
spent=0  # what the chosen cases need
for case_name in ${EXTRA//,/ }; do
  budget_needed=$(need "$case_name")
  if [ "$(( $(left) - spent ))" -ge "$budget_needed" ]; then
    chosen="${chosen:+$chosen,}$case_name"
    spent=$(( spent + budget_needed ))
  else
    echo "[$(elapsed) s] $case_name skipped: $(( $(left) - spent )) s left, it needs ~$budget_needed"
  fi
done
if [ -n "$chosen" ]; then
  timeout -k 10 "$(( $(left) - 15 ))" python3 -m svdflow bench --variant "$VARIANT" --cases "$chosen" \
    --videos "$VIDEOS" --json "$OUT/extra.json" > "$LOGS/extra.txt" 2> "$LOGS/extra.log"
  rc=$?
  echo "[$(elapsed) s] extra cases ($chosen) exited $rc" | tee -a "$OUT/logs.txt"
  keep_log extra "$LOGS/extra.log"
  grep "^bench: " "$LOGS/extra.log"
fi

# --- 5. the table, last ---------------------------------------------------------------------------
python3 - "$OUT" <<'EOF'
import json, os, sys
from svdflow.bench import format_table, merge_results
out = sys.argv[1]
parts = [json.load(open(os.path.join(out, name))) for name in ("bench.json", "compile_warm.json", "extra.json")
         if os.path.exists(os.path.join(out, name))]
if not parts:
    sys.exit("no results: see bench.log")
merged = merge_results(*parts)
check = "/tmp/svdflow-bench-logs/overlap_check.json"
if os.path.exists(check):
    merged["overlap_run_check"] = json.load(open(check))
json.dump(merged, open(os.path.join(out, "summary.json"), "w"), indent=2, default=str)
print(format_table(merged))
run_check = merged.get("overlap_run_check")
print("svdflow run with overlap_decode on and off: " + (
    "builtin:tiny {}x{}x{}, {}/{} jobs' frames identical".format(*run_check["size"], run_check["identical"],
                                                                 run_check["jobs"])
    if run_check else "no result (see logs.txt)"))
EOF
echo "[$(elapsed) s] done; results in $OUT"
