#!/usr/bin/env bash
# Every GPU check and timing for one short device lease, in one call (steps time-limited, each logged;
# a failing step does not stop the others).
#
#   benchmarks/gpu_lease.sh prepare ARCHIVE     # here, before the lease: fills the git-ignored .lease/, .whl/, .devdata/
#   benchmarks/gpu_lease.sh dry OUT [ARCHIVE]   # on a CPU, tiny sizes, about a minute: checks every step (CI runs it)
#   benchmarks/gpu_lease.sh quick OUT ARCHIVE   # ~2 min smoke test: every CUDA path at small sizes
#   benchmarks/gpu_lease.sh full OUT ARCHIVE    # the figures, in at most LEASE_SECONDS (default 470 s):
#       the step's profile, epoch times before/after, mim against lightly, then the report's table with
#       whatever time is left (each finished model's records land in OUT as it finishes)
#
# ARCHIVE is a CIFAR-10 JPEG archive (docs/development.md, "The CIFAR-10 JPEG archive"; the GPU machine is offline):
# `prepare` copies it to .devdata/. Packages the machine lacks travel as wheels in .whl/ (pydantic,
# tomli-w; lightly for the comparison), the code before the fast-path changes as .lease/before/mimcli.
# The device call carries [".whl", ".devdata", ".lease"]. `full` runs each script with --write and copies
# docs/benchmarks.md to OUT after every step, so the sections come back with the GPU named.
set -u
mode=${1:?prepare, dry, quick or full}
python=${PYTHON:-python3}
BEFORE=${BEFORE:-39912bf}  # the last commit before the step's host synchronisations were removed

if [ "$mode" = prepare ]; then
    set -e
    rm -rf .lease/before && mkdir -p .lease/before .whl .devdata
    git archive "$BEFORE" mimcli | tar -x -C .lease/before
    # the GPU machine's Python is 3.12 on x86_64 (docs/benchmarks.md); these are all it lacks
    $python -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
        --implementation cp -d .whl "pydantic>=2.6" "tomli-w>=1.0"
    $python -m pip download -q --no-deps -d .whl lightly==1.6.0 lightning-utilities==0.15.3
    [ -f .devdata/cifar10-jpeg.tar.gz ] || cp "${2:?cifar10-jpeg.tar.gz}" .devdata/
    ls -la .lease/before .whl .devdata
    exit 0
fi

out=${2:?output folder}
archive=${3:-}
mkdir -p "$out"
log=$out/lease.log
if compgen -G ".whl/*.whl" >/dev/null && [ "$mode" != dry ]; then
    $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
deadline=$((SECONDS + ${LEASE_SECONDS:-470}))

step() {  # step LIMIT command...: at most LIMIT seconds, and never past the deadline
    local limit=$1 left=$((deadline - SECONDS))
    shift
    # a dry run's steps are limited only by the deadline: on a shared CPU their times mean little
    [ "$limit" -gt "$left" ] || [ "$mode" = dry ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "== skipped, ${left} s left: $*" | tee -a "$log"
        return
    fi
    echo "== $* (limit ${limit} s)" | tee -a "$log"
    local began=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "== exit ${PIPESTATUS[0]} after $((SECONDS - began)) s" | tee -a "$log"
    [ "$mode" = full ] && cp docs/benchmarks.md "$out/"
    return 0
}

case $mode in
dry)
    rm -rf "$out/before" && mkdir -p "$out/before" && cp -r mimcli "$out/before/"  # stands in for .lease/before
    step 120 $python benchmarks/gpu_profile.py --dry-run --out "$out"
    step 120 $python benchmarks/epoch_times.py --dry-run --before "$out/before" --out "$out"
    step 60 $python benchmarks/lightly_compare.py --dry-run --out "$out"
    if [ -f "$archive" ]; then
        step 300 $python experiments/reproduce_report.py --dry-run --models simclr --archive "$archive" --out "$out"
    else
        echo "== skipped: reproduce_report.py needs the CIFAR-10 archive" | tee -a "$log"
    fi
    ;;
quick)
    step 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    step 30 $python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
    step 60 $python -m pytest -q -p no:cacheprovider tests/test_augment.py -k cuda
    step 120 $python benchmarks/gpu_check.py --quick --out "$out"
    step 60 $python benchmarks/gpu_profile.py --widths 16 --steps 3 --out "$out"
    step 120 $python experiments/reproduce_report.py --archive "$archive" --per-class 100 --epochs 2 --out "$out"
    step 90 $python benchmarks/stream_gpu.py --images 256 --batch 64 --workers 8 --out "$out"
    ;;
full)
    step 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    step 30 $python -c "import sys, torch, torchvision, pydantic; print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.version.cuda, pydantic.__version__, torch.cuda.get_device_name(0), 'cpus', __import__('os').cpu_count())"
    step 90 $python benchmarks/gpu_profile.py --out "$out" --write
    step 100 $python benchmarks/epoch_times.py --before .lease/before --out "$out" --write
    step 80 $python benchmarks/lightly_compare.py --out "$out" --write
    step 999 $python experiments/reproduce_report.py --archive "$archive" --out "$out" --write
    ;;
*)
    echo "unknown mode $mode: prepare, dry, quick or full" >&2
    exit 2
    ;;
esac
