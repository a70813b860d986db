#!/bin/bash
# Real-GPU check: the kernel/model/pipeline test binaries, full-size SD 2 (random
# weights) against diffusers at 768 px, and full-size timings. Needs python3 with torch
# and diffusers, and a release build. Usage: bash benches/full_size_check.sh
#   WGSD     the wgsd binary (default target/release/wgsd)
#   TESTBIN  folder with the release test binaries named kernels, models, pipeline,
#            device_coopmat (cargo test --release --features device-tests --no-run)
#   OUT      where the images go (default /tmp/wgsd-check)
cd "$(dirname "$0")/.."
W=${WGSD:-target/release/wgsd}
T=${TESTBIN:-.devbin}
OUT=${OUT:-/tmp/wgsd-check}
mkdir -p "$OUT"
step() { echo; echo "=== $* ($(date +%T))"; }
step gpu; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step info; $W info 2>&1 | head -30
if ! $W info >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  $W info 2>&1 | head -30
fi
# Offline machines: diffusers carried as wheels in .whl/.
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
step build-full-model
(python3 benches/sd2_full_reference.py build /tmp/sd2full > /tmp/build.json 2>/tmp/build.err; echo "build rc=$?") &
BPID=$!
step coopmat-tests; WGSD_COOPMAT=on timeout 120 $T/device_coopmat 2>&1 | grep -E "^test |test result|panicked|got" | tail -20
step pipeline-tests-coopmat; WGSD_COOPMAT=on timeout 90 $T/pipeline f16 2>&1 | grep -E "^test |test result|panicked|dB" | tail -20
step kernels-tests; timeout 150 $T/kernels --test-threads=4 2>&1 | grep -v "^test .* ok$" | tail -40
step models-tests; timeout 60 $T/models 2>&1 | grep -E "^test |test result|panicked|PSNR|max" | tail -20
step pipeline-tests; timeout 90 $T/pipeline 2>&1 | grep -E "^test |test result|panicked|dB" | tail -20
step wait-build; wait $BPID; cat /tmp/build.json; tail -3 /tmp/build.err
step diffusers-f32-768-10steps
timeout 120 python3 benches/sd2_full_reference.py reference /tmp/sd2full $OUT/ref768.png --steps 10 2>/dev/null
for P in f32 f16; do
  step wgsd-$P-768-10steps
  timeout 200 $W generate --precision $P --model /tmp/sd2full --width 768 --height 768 --steps 10 --seed 42 --json -o $OUT/wgsd768-$P.png "a red fox in the snow" 2>&1 | tail -30
  step psnr-$P; python3 benches/sd2_full_reference.py psnr $OUT/ref768.png $OUT/wgsd768-$P.png
done
step wgsd-f16-coopmat-768-10steps
WGSD_COOPMAT=on timeout 200 $W generate --precision f16 --model /tmp/sd2full --width 768 --height 768 --steps 10 --seed 42 --json -o $OUT/wgsd768-f16-coop.png "a red fox in the snow" 2>&1 | tail -30
step psnr-f16-coopmat; python3 benches/sd2_full_reference.py psnr $OUT/ref768.png $OUT/wgsd768-f16-coop.png
for C in off on; do
  step wgsd-f16-768-50steps-coopmat-$C
  WGSD_COOPMAT=$C timeout 200 $W generate --precision f16 --model /tmp/sd2full --width 768 --height 768 --steps 50 --seed 42 --json -o $OUT/wgsd768-f16-50-$C.png "a red fox in the snow" 2>&1 | tail -30
done
step bench-kernels; timeout 90 $W bench --quick --coopmat on 2>&1 | tail -50
step bench-models-full-f32; timeout 150 $W bench --models --full --sizes 512,768 --precision f32 --coopmat off 2>&1 | tail -12
step bench-models-full-f16; timeout 200 $W bench --models --full --sizes 512,768 --precision f16 --coopmat both 2>&1 | tail -26
step diffusers-f16-768-50steps; timeout 60 python3 benches/sd2_full_reference.py speed /tmp/sd2full --steps 50 --repeats 2 2>/dev/null
step done
