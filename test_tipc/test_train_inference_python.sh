#!/usr/bin/env bash
# TIPC driver: train -> eval -> export -> inference for one config.
#
#   bash test_tipc/prepare.sh CONFIG MODE                      # data first
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE
#
# MODE: lite_train_lite_infer (tiny demo set, minutes on a CPU) or
# whole_train_whole_infer (the COCO recipe). For every gpu_list entry
# (0 -> main_single_gpu.py, 0,1 -> main_multi_gpu.py --nprocs 2 at the config's
# --batch-size split over the processes, e.g. 2 x 64 for 128; on a machine
# with fewer GPUs than listed the entry runs on CPU processes) it trains,
# evaluates the checkpoint, exports it and runs Paddle Inference once per
# --use-gpu value (True only where Paddle sees a GPU).
#
# stdout: one status line per step, also appended to
# $TIPC_OUTPUT_DIR/<model_name>/results_python.log (default test_tipc/output):
#   Run successfully with command - <command> > <step log> 2>&1
#   Run failed with command - ...
#   Run skipped with command - ... (needs a successful <step>)
# Each step's own output goes to its log under <model_name>/<MODE>/gpus_<list>/;
# a failed step's last lines are printed on stderr. A failure does not stop the
# run: the steps that do not depend on it still run. Exit 0 when every step
# succeeded, 1 otherwise, 2 for a bad command line or config.
set -uo pipefail

# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"
func_load_config "$@" || exit 2

note() { echo "[tipc] $*" >&2; }
config_error() { echo "error: $CONFIG: $*" >&2; exit 2; }

# ---------------------------------------------------------------- the config
model_name=$(func_config_get model_name)
python=$(func_config_get python)
gpu_list=$(func_config_get gpu_list)
trainer=$(func_config_get trainer)
train_model_name=$(func_config_get train_model_name)
infer_img=$(func_config_get train_infer_img_dir)
train_block=$(func_config_block model_name)
for key in model_name python gpu_list trainer train_model_name eval norm_export inference; do
    [[ $(func_config_get "$key") != null ]] || config_error "'$key' is missing or null"
done
# Format placeholders this project does not use must stay null.
for key in Global.use_gpu Global.auto_cast infer_model infer_export; do
    [[ $(func_config_get "$key" | tr -d '|' | sed 's/null//g') == "" ]] \
        || config_error "'$key' is not supported here; set it to null"
done
[[ $(func_config_get "$trainer") != null ]] || config_error "trainer '$trainer' has no command"
infer_block=$(func_config_block inference)
use_gpu_values=$(func_config_get --use-gpu "$infer_block")
[[ $use_gpu_values != null ]] || use_gpu_values=False

train_flags=$(func_config_flags "$train_block")
train_cmd=$(func_squeeze "$(func_config_get "$trainer") $train_flags \
$(func_config_flags "$(func_config_block "$trainer")")")
eval_cmd=$(func_squeeze "$(func_config_get eval) $train_flags \
$(func_config_flags "$(func_config_block eval)")")
export_cmd=$(func_squeeze "$(func_config_get norm_export) \
$(func_config_flags "$(func_config_block norm_export)")")
infer_cmd=$(func_squeeze "$(func_config_get inference) $(func_config_flags "$infer_block")")
checkpoint_dir=$(func_config_get --output-dir "$train_block")
[[ $checkpoint_dir != null ]] || config_error "'--output-dir' is missing in the train block"

output_root=${TIPC_OUTPUT_DIR:-test_tipc/output}/$model_name
results_log=$output_root/results_python.log

# ---------------------------------------------------------------- the machine
# GPUs Paddle can use (asking Paddle costs a few seconds: skipped without a driver)
gpu_count=0
if command -v nvidia-smi > /dev/null 2>&1 || [[ -e /dev/nvidia0 ]]; then
    gpu_count=$($python -c "import paddle; print(paddle.device.cuda.device_count() \
if paddle.device.is_compiled_with_cuda() else 0)" 2>/dev/null | tail -n 1)
    [[ $gpu_count =~ ^[0-9]+$ ]] || { echo "error: '$python -c \"import paddle\"' failed" >&2; exit 2; }
fi
note "config $CONFIG, mode $MODE, $gpu_count GPU(s) visible to Paddle; results in $results_log"

# ---------------------------------------------------------------- steps
failures=0

command_for() {  # COMMAND ENV_PREFIX RUN_DIR -> the runnable command line
    local command=$1 env_prefix=$2 run_dir=$3 checkpoint
    checkpoint=${checkpoint_dir//\{run_dir\}/$run_dir}/$train_model_name
    [[ $command == "python "* ]] && command="$python ${command#python }"
    command=${command//\{run_dir\}/$run_dir}
    command=${command//\{checkpoint\}/$checkpoint}
    command=${command//\{infer_img\}/$infer_img}
    echo "${env_prefix:+$env_prefix }$command"
}

run_step() {  # COMMAND LOG: run it, report it; returns its exit status
    local command=$1 log=$2 status start=$SECONDS
    bash -c "$command" > "$log" 2>&1
    status=$?
    status_check "$status" "$command > $log 2>&1" "$results_log"
    note "  ($(basename "$log" .log): $((SECONDS - start))s)"
    if [[ $status -ne 0 ]]; then
        failures=$((failures + 1))
        note "exit status $status; last lines of $log:"
        tail -n 15 "$log" | sed 's/^/    /' >&2
    fi
    return "$status"
}

skip_step() {  # COMMAND LOG NEEDED_STEP: record a step not run
    local line="Run skipped with command - $1 > $2 2>&1 (needs a successful $3)"
    echo "$line" | tee -a "$results_log"
}

for gpu in ${gpu_list//|/ }; do
    run_dir=$output_root/$MODE/gpus_${gpu//,/_}
    IFS=',' read -ra ids <<< "$gpu"
    nprocs=${#ids[@]}
    if [[ $gpu == -1 ]]; then           # explicit CPU
        nprocs=1 env_prefix="CUDA_VISIBLE_DEVICES=" device="CPU"
    elif (( gpu_count >= nprocs )); then
        env_prefix="CUDA_VISIBLE_DEVICES=$gpu" device="GPU $gpu"
    else                                # fewer GPUs than listed: CPU processes
        env_prefix=$( (( gpu_count > 0 )) && echo "CUDA_VISIBLE_DEVICES=" ) device="CPU"
    fi
    train=$train_cmd evaluate=$eval_cmd
    if (( nprocs > 1 )); then  # the same global batch: --batch-size / nprocs per process
        train=$(func_per_process_batch "$train" "$nprocs") \
            && evaluate=$(func_per_process_batch "$evaluate" "$nprocs") \
            || config_error "--batch-size is not a multiple of the $nprocs processes of '$gpu'"
        train="${train/main_single_gpu.py/main_multi_gpu.py} --nprocs $nprocs"
        evaluate="${evaluate/main_single_gpu.py/main_multi_gpu.py} --nprocs $nprocs"
        device="$device, $nprocs processes"
    fi
    note "gpu_list entry '$gpu': $device, outputs in $run_dir"
    rm -rf "$run_dir" && mkdir -p "$run_dir"

    train=$(command_for "$train" "$env_prefix" "$run_dir")
    evaluate=$(command_for "$evaluate" "$env_prefix" "$run_dir")
    export_=$(command_for "$export_cmd" "$env_prefix" "$run_dir")
    if run_step "$train" "$run_dir/train.log"; then
        run_step "$evaluate" "$run_dir/eval.log"
        run_step "$export_" "$run_dir/export.log"
        exported=$?
    else
        skip_step "$evaluate" "$run_dir/eval.log" train
        skip_step "$export_" "$run_dir/export.log" train
        exported=1
    fi
    for use_gpu in ${use_gpu_values//|/ }; do
        infer_env=$env_prefix
        if [[ ${use_gpu,,} == true ]]; then   # the entry's first GPU, else GPU 0
            infer_env="CUDA_VISIBLE_DEVICES=$( (( ${ids[0]} >= 0 && ${ids[0]} < gpu_count )) \
                && echo "${ids[0]}" || echo 0)"
        fi
        infer="$(command_for "$infer_cmd" "$infer_env" "$run_dir") --use-gpu $use_gpu"
        log=$run_dir/infer_use_gpu_$use_gpu.log
        if [[ ${use_gpu,,} == true ]] && (( gpu_count == 0 )); then
            note "--use-gpu $use_gpu not run: no GPU visible to Paddle"
        elif (( exported != 0 )); then
            skip_step "$infer" "$log" export
        else
            run_step "$infer" "$log"
        fi
    done
done

if (( failures > 0 )); then
    note "$failures step(s) failed in ${SECONDS}s (see $results_log)"
    exit 1
fi
note "all steps succeeded in ${SECONDS}s"
