#!/usr/bin/env bash
# TIPC driver: train -> eval -> export -> inference for one config.
#
#   bash test_tipc/prepare.sh CONFIG MODE                      # data first
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE
#
# MODE: lite_train_lite_infer (tiny data, minutes on a CPU),
# whole_train_whole_infer (the COCO recipe) or whole_infer (export the
# config's infer_model checkpoint with its infer_export command, then infer).
# For every gpu_list entry (0 -> main_single_gpu.py, 0,1 -> main_multi_gpu.py
# --nprocs 2 at the config's --batch-size split over the processes, e.g. 2 x 64
# for 128; on a machine with fewer GPUs than listed the entry runs on CPU
# processes) it trains, evaluates the checkpoint, exports it and runs Paddle
# Inference once per --use-gpu value (True only where Paddle sees a GPU).
#
# Configs in the reference's (PaddleClas) format run as they are (docs/deployment.md, TIPC:
# "the reference's configs"): commands without a leading "python" get the
# config's python; an --output-dir / --save-inference-dir without {run_dir}
# means the driver's own folder of the entry; eval and export get --pretrained
# <checkpoint> when their block does not set it; --model-dir is the export's
# folder; a train "use-gpu:True" entry needs a GPU and is skipped without one.
#
# stdout: one status line per step, also appended to
# $TIPC_OUTPUT_DIR/<model_name>/results_python.log (default test_tipc/output):
#   Run successfully with command - <command> > <step log> 2>&1
#   Run failed with command - ...
#   Run skipped with command - ... (needs a successful <step> | needs a GPU: ...)
# Each step's own output goes to its log under <model_name>/<MODE>/gpus_<list>/;
# a failed step's last lines are printed on stderr. A failure does not stop the
# run: the steps that do not depend on it still run. Exit 0 when no step
# failed (steps skipped for want of a GPU are not failures), 1 otherwise, 2 for
# a bad command line or config.
set -uo pipefail

# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"
func_load_config "$@" || exit 2

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
for key in Global.use_gpu Global.auto_cast; do
    [[ $(func_config_get "$key" | tr -d '|' | sed 's/null//g') == "" ]] \
        || config_error "'$key' is not supported here; set it to null"
done
[[ $(func_config_get "$trainer") != null ]] || config_error "trainer '$trainer' has no command"
train_use_gpu=$(func_config_get use-gpu "$train_block")   # per gpu_list entry (the reference's)
eval_block=$(func_config_block eval)
export_block=$(func_config_block norm_export)
infer_block=$(func_config_block inference)
use_gpu_values=$(func_config_get --use-gpu "$infer_block")
[[ $use_gpu_values != null ]] || use_gpu_values=False
func_config_set --use-gpu "$infer_block" null   # the driver adds it, one value per run

# The reference's meanings (see the header): the driver's folders and the checkpoint.
checkpoint_dir=$(func_config_get --output-dir "$train_block")
[[ $checkpoint_dir != null ]] || config_error "'--output-dir' is missing in the train block"
if [[ $checkpoint_dir != *'{run_dir}'* ]]; then
    checkpoint_dir='{run_dir}'
    func_config_set --output-dir "$train_block" "$checkpoint_dir"
fi
for block in "$eval_block" "$export_block"; do
    case $(func_config_get --pretrained "$block") in
        null|"") func_config_set --pretrained "$block" '{checkpoint}' ;;
    esac
done
infer_dir=$(func_config_get --save-inference-dir "$export_block")
if [[ $MODE == whole_infer ]]; then   # the reference: infer_model exported into this folder
    case $infer_dir in null|"") infer_dir='{run_dir}/inference' ;; esac
elif [[ $infer_dir != *'{run_dir}'* ]]; then
    infer_dir='{run_dir}/inference'
fi
func_config_set --save-inference-dir "$export_block" "$infer_dir"
func_config_set --model-dir "$infer_block" "$infer_dir"
[[ $infer_img != null ]] || infer_img=$(func_config_get --img-path "$infer_block")

train_flags=$(func_config_flags "$train_block")
train_cmd=$(func_squeeze "$(func_config_get "$trainer") $train_flags \
$(func_config_flags "$(func_config_block "$trainer")")")
eval_cmd=$(func_squeeze "$(func_config_get eval) $train_flags $(func_config_flags "$eval_block")")
export_cmd=$(func_squeeze "$(func_config_get norm_export) $(func_config_flags "$export_block")")
infer_cmd=$(func_squeeze "$(func_config_get inference) $(func_config_flags "$infer_block")")
if [[ $MODE == whole_infer ]]; then   # export infer_model (the reference: the line before infer_export)
    infer_export=$(func_config_get infer_export)
    infer_model=$(func_config_get infer_model)
    if [[ $infer_model == null ]] && i=$(func_config_index infer_export) && (( i > 0 )); then
        infer_model=${CFG_VALUE[i - 1]}
    fi
    [[ $infer_export != null ]] || config_error "whole_infer needs 'infer_export' (the export command)"
    [[ -f ${infer_model%.pdparams}.pdparams ]] \
        || config_error "whole_infer needs 'infer_model': a checkpoint (.pdparams) to export, not '$infer_model'"
    func_config_set --pretrained "$export_block" "${infer_model%.pdparams}"
    export_cmd=$(func_squeeze "$infer_export $(func_config_flags "$export_block")")
fi

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
    if [[ $command == "python "* ]]; then
        command="$python ${command#python }"
    else                               # the reference's "norm_train:main_single_gpu.py ..."
        command="$python $command"
    fi
    command=$(func_fill "$command" run_dir "$run_dir")          # each a quoted word
    command=$(func_fill "$command" checkpoint "$checkpoint")
    command=$(func_fill "$command" infer_img "$infer_img")
    echo "${env_prefix:+$env_prefix }$command"
}

NO_GPU="needs a GPU: none visible to Paddle"

infer_steps() {  # ENV_PREFIX RUN_DIR FIRST_ID WHY_NOT: inference once per --use-gpu value
    # WHY_NOT: "" to run them, else the reason they are skipped
    local env_prefix=$1 run_dir=$2 first_id=$3 why_not=$4 use_gpu infer_env infer log
    for use_gpu in ${use_gpu_values//|/ }; do
        infer_env=$env_prefix
        if [[ ${use_gpu,,} == true ]]; then   # the entry's first GPU, else GPU 0
            infer_env="CUDA_VISIBLE_DEVICES=$( (( first_id >= 0 && first_id < gpu_count )) \
                && echo "$first_id" || echo 0)"
        fi
        infer="$(command_for "$infer_cmd" "$infer_env" "$run_dir") --use-gpu $use_gpu"
        log=$run_dir/infer_use_gpu_$use_gpu.log
        if [[ ${use_gpu,,} == true ]] && (( gpu_count == 0 )); then
            skip_step "$infer" "$log" "$NO_GPU"
        elif [[ -n $why_not ]]; then
            skip_step "$infer" "$log" "$why_not"
        else
            run_step "$infer" "$log"
        fi
    done
}

if [[ $MODE == whole_infer ]]; then
    run_dir=$output_root/$MODE
    rm -rf "$run_dir" && mkdir -p "$run_dir"
    note "whole_infer: exporting ${infer_model%.pdparams}, outputs in $run_dir"
    run_step "$(command_for "$export_cmd" "" "$run_dir")" "$run_dir/export.log" \
        && infer_steps "" "$run_dir" 0 "" || infer_steps "" "$run_dir" 0 "needs a successful export"
fi

use_gpu_of_entry=(${train_use_gpu//|/ })
entry=0
for gpu in ${gpu_list//|/ }; do
    [[ $MODE == whole_infer ]] && break
    run_dir=$output_root/$MODE/gpus_${gpu//,/_}
    IFS=',' read -ra ids <<< "$gpu"
    nprocs=${#ids[@]}
    entry_use_gpu=${use_gpu_of_entry[entry]:-null}
    entry=$((entry + 1))
    if [[ $gpu == -1 || ${entry_use_gpu,,} == false ]]; then   # explicit CPU
        env_prefix="CUDA_VISIBLE_DEVICES=" device="CPU"
        [[ $gpu == -1 ]] && nprocs=1
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
    rm -rf "$run_dir" && mkdir -p "$run_dir"

    train=$(command_for "$train" "$env_prefix" "$run_dir")
    evaluate=$(command_for "$evaluate" "$env_prefix" "$run_dir")
    export_=$(command_for "$export_cmd" "$env_prefix" "$run_dir")
    if [[ ${entry_use_gpu,,} == true ]] && (( gpu_count == 0 )); then
        note "gpu_list entry '$gpu' (use-gpu True): $NO_GPU; its steps are skipped"
        skip_step "$train" "$run_dir/train.log" "use-gpu True $NO_GPU"
        skip_step "$evaluate" "$run_dir/eval.log" "use-gpu True $NO_GPU"
        skip_step "$export_" "$run_dir/export.log" "use-gpu True $NO_GPU"
        infer_steps "$env_prefix" "$run_dir" "${ids[0]}" "use-gpu True $NO_GPU"
        continue
    fi
    note "gpu_list entry '$gpu': $device, outputs in $run_dir"
    why_not="needs a successful export"
    if run_step "$train" "$run_dir/train.log"; then
        run_step "$evaluate" "$run_dir/eval.log"
        run_step "$export_" "$run_dir/export.log" && why_not=""
    else
        skip_step "$evaluate" "$run_dir/eval.log" "needs a successful train"
        skip_step "$export_" "$run_dir/export.log" "needs a successful train"
    fi
    infer_steps "$env_prefix" "$run_dir" "${ids[0]}" "$why_not"
done

if (( failures > 0 )); then
    note "$failures step(s) failed in ${SECONDS}s (see $results_log)"
    exit 1
fi
note "no step failed in ${SECONDS}s (results in $results_log)"
