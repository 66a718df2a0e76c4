#!/usr/bin/env bash
# Run MEDS-Tab (meds-tab 0.2.0) end to end on an ehrfm MEDS dataset for one task.
# usage: run_meds_tab.sh MEDS_DIR TASK_LABELS_DIR OUT_DIR
#   MEDS_DIR        MEDS root (contains data/{train,tuning,held_out}/*.parquet, metadata/)
#   TASK_LABELS_DIR folder of MEDS label parquet(s) for ONE task, e.g. .../labels/mortality_1y
#                   (meds-tab globs **/*.parquet under it, so do not pass the parent labels dir)
#   OUT_DIR         fresh output dir
# env: VENV (default ~/.cache/ehrfm/venv_meds_tab), FIX_LABELS=1 (pre-write correct label cache, see below),
#      WINDOWS, AGGS, MIN_CODE_COUNT
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 MEDS_DIR TASK_LABELS_DIR OUT_DIR" >&2; exit 2; }
MEDS_DIR=$(realpath "$1"); LABELS_DIR=$(realpath "$2"); OUT=$(realpath -m "$3")
TASK=$(basename "$LABELS_DIR")
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ehrfm/venv_meds_tab}
FIX_LABELS=${FIX_LABELS:-1}
WINDOWS=${WINDOWS:-[1d,365d,full]}
# static/first is omitted: ehrfm static rows (GENDER/, RACE/, ...) carry no numeric_value, and
# meds-tab then fails with "ValueError: No static features found. Remove the aggregation function static/first"
AGGS=${AGGS:-[static/present,code/count,value/count,value/sum,value/min,value/max]}
MIN_CODE_COUNT=${MIN_CODE_COUNT:-10}
export POLARS_MAX_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2

if [ ! -x "$VENV/bin/meds-tab-describe" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q meds-tab==0.2.0
fi
B="$VENV/bin"
mkdir -p "$OUT"
# inputs are copied so that nothing is ever written next to the originals
mkdir -p "$OUT/input"; cp -r "$MEDS_DIR" "$OUT/input/meds"; cp -r "$LABELS_DIR" "$OUT/input/labels_$TASK"
D="$OUT/input/meds/data"; L="$OUT/input/labels_$TASK"; O="$OUT/tab"
COMMON=(input_dir="$D" output_dir="$O" tabularization.min_code_inclusion_count="$MIN_CODE_COUNT"
        "tabularization.window_sizes=$WINDOWS" "tabularization.aggs=$AGGS")
step() { local name=$1; shift; local t0=$SECONDS; echo "== $name: $*" >&2
         timeout 1800 "$@" > "$OUT/$name.log" 2>&1 || { echo "FAILED $name (see $OUT/$name.log)" >&2; tail -20 "$OUT/$name.log" >&2; exit 1; }
         echo "== $name done in $((SECONDS - t0)) s" >&2; }

step 1_describe            "$B/meds-tab-describe" input_dir="$D" output_dir="$O"
step 2_tabularize_static   "$B/meds-tab-tabularize-static" "${COMMON[@]}"
step 3_tabularize_ts       "$B/meds-tab-tabularize-time-series" "${COMMON[@]}"
if [ "$FIX_LABELS" = 1 ]; then
  # meds-tab 0.2.0 + polars 1.44: cache_task.extract_labels does an order-scrambling inner join and
  # then an unsorted join_asof, so ~37% of labels get a LATER event's features (future leakage).
  # Pre-writing the label cache with sorted inputs makes cache-task reuse it ("Labels already exist").
  step 4a_fix_labels "$B/python" "$HERE/meds_tab_fix_labels.py" "$D" "$O/metadata/codes.parquet" "$L" "$O/$TASK/labels" "$MIN_CODE_COUNT"
fi
step 4_cache_task          "$B/meds-tab-cache-task" "${COMMON[@]}" task_name="$TASK" input_label_dir="$L"
step 5_xgboost             "$B/meds-tab-xgboost" "${COMMON[@]}" task_name="$TASK" output_model_dir="$O/models"
echo "== performance ($TASK; test_auc = held_out):"
cat "$O"/models/*/sweep_results/*/performance.log
