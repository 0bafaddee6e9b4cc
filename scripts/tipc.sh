#!/usr/bin/env bash
# TIPC for all four code lengths: prepare, then train -> eval -> export -> inference.
#
#   bash scripts/tipc.sh                             # lite_train_lite_infer (tiny demo set)
#   bash scripts/tipc.sh whole_train_whole_infer     # the COCO recipe (needs data/coco; GPU time)
#   TIPC_BITS="16 64" bash scripts/tipc.sh           # a subset
#
# Status lines go to stdout and test_tipc/output/hashnet_<bit>/results_python.log.
# Every bit length runs even if an earlier one failed; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-lite_train_lite_infer}
failed=()
for bit in ${TIPC_BITS:-16 32 48 64}; do
    config=test_tipc/configs/hashnet_$bit/train_infer_python.txt
    if ! bash test_tipc/prepare.sh "$config" "$MODE" >&2 \
        || ! bash test_tipc/test_train_inference_python.sh "$config" "$MODE"; then
        failed+=("$bit")
    fi
done
if (( ${#failed[@]} > 0 )); then
    echo "TIPC $MODE failed for bit length(s): ${failed[*]}" >&2
    exit 1
fi
echo "TIPC $MODE: all bit lengths passed" >&2
