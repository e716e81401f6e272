#!/usr/bin/env bash
# Issue 22's GPU figures in one run, for a lent GPU machine whose time is short: each benchmark prints its table and
# verdicts and writes its JSON into $RESULTS (default benchmarks/results/gpu), and a step that overruns its time
# limit is cut without stopping the rest. Run from the repository root with a Python that has torch with CUDA, this
# repository's requirements, and isegprobe installed (`pip install --no-deps --no-build-isolation -e .` works
# offline; PYTHONPATH=. is not enough, since the presets are the package isegprobe.configs mapped from configs/):
#
#     bash benchmarks/on_gpu.sh            # about 6 minutes on one H200 with 16 cores
#     SCALE=small DEVICE=cpu bash benchmarks/on_gpu.sh   # a few minutes: checks the script itself, no figures
#     SKIP="extract_small_workers train_large" bash benchmarks/on_gpu.sh   # leaves out the steps named
#     RESEARCH_SRC=.gpu/iSegProbe bash benchmarks/on_gpu.sh   # first MaskCLIP's float16 against the research code's
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
DEVICE="${DEVICE:-cuda}"
RESULTS="${RESULTS:-benchmarks/results/gpu}"
CACHE="$RESULTS/cache"
mkdir -p "$RESULTS"
if [ "${SCALE:-full}" = small ]; then
  SMALL=vit_small_patch14_dinov2 LARGE=vit_small_patch14_dinov2 SIZE=112 IMAGES=16 OBJECTS=2 STEPS=20 LIMIT=300
else
  SMALL=vit_small_patch14_dinov2 LARGE=vit_large_patch14_dinov2 SIZE=448 IMAGES=1024 OBJECTS=16 STEPS=200 LIMIT=150
fi

step() {  # step NAME COMMAND...: run one benchmark under the time limit, its output kept in $RESULTS/NAME.log
  local name=$1
  shift
  case " ${SKIP:-} " in *" $name "*) echo "=== $name: skipped"; return ;; esac
  echo "=== $name: $*"
  timeout "$LIMIT" "$@" --device "$DEVICE" --cache-dir "$CACHE" --json "$RESULTS/$name.json" 2>&1 \
    | grep -v -e '^extract' -e '^train ' -e 'it/s\]$' | tee "$RESULTS/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]}"
}

python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
# The CUDA cases of the tests first: the clicks drawn on the device against the loader's, a store kept on the
# device against the store read, extraction's queued forward against one waited for, the tensor clicker's clicks
# against OpenCV's, and a training step's torch draws; they also warm the machine up (a fresh one ran the first
# benchmark 2.4 to 3.8x slower than the same command right after).
CUDA_TESTS="tests/test_batch_sampler.py tests/test_preload.py tests/test_cache.py tests/test_tensor_clicker.py tests/test_training.py"
echo "=== pytest -k cuda $CUDA_TESTS"
timeout "$LIMIT" python3 -m pytest -q -p no:cacheprovider -k cuda $CUDA_TESTS 2>&1 | tail -3
if [ -n "${RESEARCH_SRC:-}" ]; then  # a checkout of havrylovv/iSegProbe (core/model/featurizers is all it reads)
  echo "=== research_maskclip"
  timeout "$LIMIT" python3 benchmarks/research_maskclip.py --research-src "$RESEARCH_SRC" --device "$DEVICE" 2>&1 \
    | tee "$RESULTS/research_maskclip.log"
fi
step extract_small python3 benchmarks/extract_pipeline.py --featurizer "$SMALL" --size "$SIZE" --images "$IMAGES" \
  --featurizer-target 0.5 --with-featurizer
# The same with more loader workers than the default's eight: with the forward queued, the workers may be the limit.
step extract_small_workers python3 benchmarks/extract_pipeline.py --featurizer "$SMALL" --size "$SIZE" \
  --images "$IMAGES" --featurizer-target 0.5 --with-featurizer --extract-workers 12
step extract_large python3 benchmarks/extract_pipeline.py --featurizer "$LARGE" --size "$SIZE" \
  --images "$((IMAGES / 2))" --featurizer-target 0.9 --with-featurizer
step train_small python3 benchmarks/train_throughput.py --featurizer "$SMALL" --threads 0 --size "$SIZE" \
  --size-a "$SIZE" --items 24 --repeats 3 --repeats-a 2 --steps 10 --steps-a 3
# The same with the loader workers a GPU run now starts by default (data.num_workers: auto) for the store read as it goes.
step train_small_workers python3 benchmarks/train_throughput.py --featurizer "$SMALL" --threads 0 --size "$SIZE" \
  --probes b --items 24 --repeats 3 --steps 10 --side-by-side 0 --workers auto
# One profiled step of the small probe: the device's busy time against the step's, and the kernels that take it.
step train_profile python3 benchmarks/train_throughput.py --featurizer "$SMALL" --threads 0 --size "$SIZE" \
  --probes b --items 24 --repeats 1 --steps 10 --side-by-side 0 --profile
step train_large python3 benchmarks/train_throughput.py --featurizer "$LARGE" --threads 0 --size "$SIZE" \
  --probes b --items 24 --batch-size 8 --repeats 3 --steps 2
step eval_large python3 benchmarks/eval_per_click.py --featurizer "$LARGE" --threads 0 --size "$SIZE" \
  --objects "$OBJECTS" --batch-size "$OBJECTS" --train-steps "$STEPS"
