#!/usr/bin/env bash
# The GPU check (issue 21), in one call: the first thing to run on a lent CUDA machine (about 15 minutes of it in
# all), with the project's venv built there (`make install`) or its wheels carried. Under 8 minutes:
#
#   1. the CUDA tests (`pytest -m gpu`: the AMP step on the card, and every other test marked gpu);
#   2. the smoke study on CUDA (notebooks 01-04, the device-resident feeder `feeder: gpu` and autocast `amp: true`),
#      its per-volume Dice beside the CPU run's (CPU_RUN, default outputs/smoke; else the committed
#      docs/smoke_report.md means);
#   3. `liverlib bench` at 256²: the paper path vs the fast path, batch 8 and 32, torch.compile off and on;
#   4. docs/benchmarks_gpu.md: the card, driver, CUDA, cuDNN, torch and package versions, each step's result and
#      time (tools/gpu_check_report.py), then where each minute went, printed.
#
# Everything that needs no GPU is checked first (the venv, imports, the command line, the parameters of step 2,
# the collection of the gpu tests, the report writer). Without a CUDA device it stops there with ONE line saying
# so (exit 3) and changes nothing; a failed check is one line naming its log (exit 1).
#
#   tools/gpu_check.sh                       # from anywhere in the checkout
#   PYTHON=/path/to/python OUT=report.md tools/gpu_check.sh
#   T_TESTS=80 T_SMOKE=160 T_BENCH=200 tools/gpu_check.sh    # per-step limits in seconds (the defaults: with the
#                                                            # checks and the report, 8 minutes at most)
#
# Needs no network. Work files (logs, the smoke run, the raw bench report) go to WORK (default outputs/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-docs/benchmarks_gpu.md}"
WORK="${WORK:-outputs/gpu_check}"
CPU_RUN="${CPU_RUN:-outputs/smoke}"
T_TESTS="${T_TESTS:-80}"
T_SMOKE="${T_SMOKE:-160}"
T_BENCH="${T_BENCH:-200}"
T_CHECK="${T_CHECK:-300}"   # each check that needs no GPU (seconds on a fresh machine; minutes on a loaded one)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$WORK" || { echo "gpu_check: cannot create the work folder $WORK"; exit 1; }
STEPS="$WORK/steps.tsv"
printf 'step\tseconds\texit\n' > "$STEPS"
T0=$SECONDS

# run NAME LIMIT CMD...: one step, its output in $WORK/NAME.log, its time and exit code in steps.tsv
run() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$rc" >> "$STEPS"
    return $rc
}

# check NAME CMD...: a CPU-side check; a failure stops everything with one line
check() {
    local name=$1 rc why
    shift
    run "check_$name" "$T_CHECK" "$@"
    rc=$?
    if ((rc != 0)); then
        why=$(tail -n 1 "$WORK/check_$name.log")
        ((rc == 124 || rc == 137)) && why="no answer within ${T_CHECK} s (T_CHECK)"
        echo "gpu_check: the check '$name' failed (exit $rc; see $WORK/check_$name.log): ${why:-no output}"
        exit 1
    fi
}

# --- what needs no GPU ---------------------------------------------------------------------------------------
GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
# one interpreter for the venv, the parameters of step 2 and the report writer (each start imports torch anew)
check python "$PYTHON" -c "
import sys, runpy
import liverlib, torch, papermill
from liverlib.pipeline.study import study_parameters
study_parameters(['params/base.yaml', 'params/smoke.yaml'], {'device': 'cuda', 'feeder': 'gpu', 'amp': True,
                 'train_baseline': False, 'run_name': 'smoke_cuda', 'output_root': '$WORK'})
sys.argv = ['gpu_check_report.py', '--check']
runpy.run_path('tools/gpu_check_report.py', run_name='__main__')
"
check cli "$PYTHON" -m liverlib bench --help
# shellcheck disable=SC2086
check gpu_tests "$PYTHON" -m pytest --collect-only -q -m gpu -p no:cacheprovider $GPU_TESTS
check out_writable test -w "$(dirname "$OUT")"
if ! TORCH=$("$PYTHON" -c "import sys, torch; print(torch.__version__); sys.exit(0 if torch.cuda.is_available() else 3)" 2>/dev/null); then
    echo "gpu_check: no CUDA device visible to torch ${TORCH:-?}; the checks that need none passed in $((SECONDS - T0)) s (venv and imports, parameters of the CUDA smoke run, report writer, command line, gpu test collection, $(dirname "$OUT")/ writable); nothing measured, $OUT unchanged"
    exit 3
fi

# --- on the card ---------------------------------------------------------------------------------------------
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi not available"
echo "[gpu_check] 1/3 CUDA tests (pytest -m gpu, limit ${T_TESTS} s)"
# shellcheck disable=SC2086
run tests "$T_TESTS" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -rs $GPU_TESTS
tail -n 3 "$WORK/tests.log"

echo "[gpu_check] 2/3 smoke study on CUDA: notebooks 01-04, feeder gpu, autocast (limit ${T_SMOKE} s)"
rm -rf "$WORK/smoke_cuda"
run smoke "$T_SMOKE" "$PYTHON" -m liverlib study -f params/base.yaml -f params/smoke.yaml --only 01 02 03 04 \
    --set device=cuda feeder=gpu amp=true train_baseline=false run_name=smoke_cuda "output_root=$WORK"
tail -n 2 "$WORK/smoke.log"

echo "[gpu_check] 3/3 bench at 256²: paper vs fast path, batch 8 and 32, compile off and on (limit ${T_BENCH} s)"
run bench "$T_BENCH" "$PYTHON" -m liverlib bench --sizes 256 --batch-size 8 --big-batch 32 --compile --device cuda \
    --quick --out "$WORK/bench.md"
tail -n 2 "$WORK/bench.log"

run report 60 "$PYTHON" tools/gpu_check_report.py --work "$WORK" --out "$OUT" --cpu-run "$CPU_RUN"
cat "$WORK/report.log"
echo "[gpu_check] where the time went (s; exit 124 = the step's limit):"
column -t -s $'\t' "$STEPS" 2>/dev/null || cat "$STEPS"
echo "[gpu_check] total $((SECONDS - T0)) s; report: $OUT"
