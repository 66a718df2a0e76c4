#!/usr/bin/env bash
# Run meds-torch-data (0.9.0) preprocessing + build a task MEDSPytorchDataset and read batches.
# usage: run_meds_torch_data.sh MEDS_DIR TASK_LABELS_DIR OUT_DIR
# env: VENV (default ~/.cache/ehrfm/venv_meds_torch_data)
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 MEDS_DIR TASK_LABELS_DIR OUT_DIR" >&2; exit 2; }
MEDS_DIR=$(realpath "$1"); LABELS_DIR=$(realpath "$2"); OUT=$(realpath -m "$3")
TASK=$(basename "$LABELS_DIR")
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ehrfm/venv_meds_torch_data}
export POLARS_MAX_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2

if [ ! -x "$VENV/bin/MTD_preprocess" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q meds-torch-data==0.9.0
fi
# MTD_preprocess shells out to MEDS_transform-pipeline by name, so the venv must be on PATH
export PATH="$VENV/bin:$PATH"
mkdir -p "$OUT/input"; cp -r "$MEDS_DIR" "$OUT/input/meds"; cp -r "$LABELS_DIR" "$OUT/input/labels_$TASK"
t0=$SECONDS
echo "== MTD_preprocess MEDS_dataset_dir=$OUT/input/meds output_dir=$OUT/tensorized" >&2
timeout 1800 MTD_preprocess MEDS_dataset_dir="$OUT/input/meds" output_dir="$OUT/tensorized" > "$OUT/MTD_preprocess.log" 2>&1 \
  || { echo "FAILED MTD_preprocess" >&2; tail -40 "$OUT/MTD_preprocess.log" >&2; exit 1; }
echo "== MTD_preprocess done in $((SECONDS - t0)) s" >&2
t0=$SECONDS
timeout 600 python "$HERE/mtd_load.py" "$OUT/tensorized" "$OUT/input/labels_$TASK"
echo "== dataset/dataloader check done in $((SECONDS - t0)) s" >&2
