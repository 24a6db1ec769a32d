#!/usr/bin/env bash
# Every GPU check and timing for one short device lease, in one call (steps time-limited, each logged;
# a failing step does not stop the others).
#
#   benchmarks/gpu_lease.sh quick OUT ARCHIVE   # ~2 min smoke test: every CUDA path at small sizes
#   benchmarks/gpu_lease.sh full OUT ARCHIVE    # the figures: report table, GPU check, stream mode
#
# ARCHIVE is shared/data/cifar10-jpeg.tar.gz copied into the checkout (the GPU machine is offline).
# Packages the machine lacks travel as wheels in .whl/ (pydantic, tomli-w). `full` runs each script
# with --write and copies docs/benchmarks.md to OUT, so the sections come back with the GPU named.
set -u
mode=${1:?quick or full}
out=${2:?output folder}
archive=${3:?cifar10-jpeg.tar.gz}
mkdir -p "$out"
log=$out/lease.log
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step() {
    local limit=$1
    shift
    echo "== $* (limit ${limit} s)" | tee -a "$log"
    local began=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "== exit ${PIPESTATUS[0]} after $((SECONDS - began)) s" | tee -a "$log"
}

step 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step 30 python3 -c "import sys, torch, torchvision, pydantic; print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.version.cuda, pydantic.__version__, torch.cuda.get_device_name(0), 'cpus', __import__('os').cpu_count())"
if [ "$mode" = quick ]; then
    step 60 python3 -m pytest -q -p no:cacheprovider tests/test_augment.py -k cuda
    step 120 python3 benchmarks/gpu_check.py --quick --out "$out"
    step 120 python3 benchmarks/reproduce_report.py --archive "$archive" --per-class 100 --epochs 2 --out "$out"
    step 90 python3 benchmarks/stream_gpu.py --images 256 --batch 64 --workers 8 --out "$out"
else
    step 360 python3 benchmarks/reproduce_report.py --archive "$archive" --out "$out" --write
    step 80 python3 benchmarks/stream_gpu.py --images 2048 --batch 256 --workers 14 --out "$out" --write
    step 140 python3 benchmarks/gpu_check.py --out "$out" --write
    cp docs/benchmarks.md "$out/"
fi
