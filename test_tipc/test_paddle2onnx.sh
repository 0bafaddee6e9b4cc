#!/usr/bin/env bash
# TIPC paddle2onnx mode (PaddleClas's test_paddle2onnx.sh): convert a trained
# checkpoint to ONNX, then run inference on it with onnxruntime.
#
#   bash test_tipc/test_train_inference_python.sh test_tipc/configs/hashnet_16/train_infer_python.txt lite_train_lite_infer
#   bash test_tipc/test_paddle2onnx.sh test_tipc/configs/hashnet_16/paddle2onnx_infer_python.txt lite_train_lite_infer
#
# The config's "2onnx" command (export_model.py --format onnx: the Paddle 3
# export through paddle2onnx, checked against the dygraph model on
# onnxruntime, installed only if it passes) takes the checkpoint of
# --pretrained, in the config usually the train_infer_python run's
# model_best; "{tipc_output}" is $TIPC_OUTPUT_DIR (default test_tipc/output),
# "{run_dir}" this mode's folder. Then the "inference" command once per
# --use-gpu value (onnxruntime runs on the CPU: True is skipped with the reason).
#
# stdout: one status line per step, also appended to
# $TIPC_OUTPUT_DIR/<model_name>/results_paddle2onnx.log. Exit 0 when no step
# failed, 1 otherwise, 2 for a bad command line or config.
set -uo pipefail

# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"
func_load_config "$@" || exit 2

model_name=$(func_config_get model_name)
python=$(func_config_get python)
for key in model_name python 2onnx inference; do
    [[ $(func_config_get "$key") != null ]] || config_error "'$key' is missing or null"
done
convert_block=$(func_config_block 2onnx)
infer_block=$(func_config_block inference)
use_gpu_values=$(func_config_get --use-gpu "$infer_block")
[[ $use_gpu_values != null ]] || use_gpu_values=False
func_config_set --use-gpu "$infer_block" null   # one value per run, added below

tipc_output=${TIPC_OUTPUT_DIR:-test_tipc/output}
output_root=$tipc_output/$model_name
results_log=$output_root/results_paddle2onnx.log
run_dir=$output_root/paddle2onnx_$MODE
failures=0

command_for() {  # COMMAND -> the runnable command line
    local command=$1
    [[ $command == "python "* ]] && command=${command#python }
    command=$(func_fill "$python $command" run_dir "$run_dir")   # each a quoted word
    func_fill "$command" tipc_output "$tipc_output"
}

convert=$(command_for "$(func_config_get 2onnx) $(func_config_flags "$convert_block")")
infer=$(command_for "$(func_config_get inference) $(func_config_flags "$infer_block")")
checkpoint=$(func_config_get --pretrained "$convert_block")
checkpoint=${checkpoint//\{run_dir\}/$run_dir}
checkpoint=${checkpoint//\{tipc_output\}/$tipc_output}
[[ -f ${checkpoint%.pdparams}.pdparams ]] || config_error "no checkpoint ${checkpoint%.pdparams}.pdparams \
to convert: run test_tipc/test_train_inference_python.sh first (or set --pretrained)"

note "config $CONFIG, mode $MODE; results in $results_log"
rm -rf "$run_dir" && mkdir -p "$run_dir"
run_step "$convert" "$run_dir/paddle2onnx.log"
converted=$?
for use_gpu in ${use_gpu_values//|/ }; do
    log=$run_dir/infer_onnx_use_gpu_$use_gpu.log
    if [[ ${use_gpu,,} == true ]]; then
        skip_step "$infer --use-gpu $use_gpu" "$log" "onnxruntime runs on the CPU here"
    elif (( converted != 0 )); then
        skip_step "$infer --use-gpu $use_gpu" "$log" "needs a successful conversion"
    else
        run_step "$infer --use-gpu $use_gpu" "$log"
    fi
done
if (( failures > 0 )); then
    note "$failures step(s) failed in ${SECONDS}s (see $results_log)"
    exit 1
fi
note "no step failed in ${SECONDS}s (results in $results_log)"
