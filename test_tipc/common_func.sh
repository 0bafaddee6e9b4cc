#!/usr/bin/env bash
# Helpers shared by test_tipc/prepare.sh and test_tipc/test_train_inference_python.sh
# (sourced, not run). Written for this project; see test_tipc/README.md for the
# config format.
#
# A config line is KEY:VALUE, split at the first colon. A value can be
#   plain          --bit:16
#   per mode       --epoch:lite_train_lite_infer=2|whole_train_whole_infer=150
#   a list         --use-gpu:False|True        (the driver loops over it)
#   null           --pretrained:null           (the flag is left out)
# Lines starting with "##" or "===" separate blocks; blank lines are ignored.
#
# A config is data, never code: every flag value goes into the commands as
# one quoted word (func_quote), so ";", "$(...)" or a quote in it reach the
# program as text; a command (norm_train:, eval:, ...) must be
# "[python] SCRIPT.py ARGS" of plain characters; names that become paths
# (model_name, train_model_name, gpu_list entries) cannot leave the output
# folder. func_check_config refuses anything else in one line (exit 2).

TIPC_MODES="lite_train_lite_infer whole_train_whole_infer whole_infer"

func_parser_key() {    # "KEY:VALUE" -> KEY
    local line=$1
    echo "${line%%:*}"
}

func_parser_value() {  # "KEY:VALUE" -> VALUE ("" when the line has no colon)
    local line=$1
    [[ $line == *:* ]] && echo "${line#*:}" || echo ""
}

func_is_mode_value() {  # VALUE -> true if it is written "mode=value|mode=value"
    [[ $1 =~ ^[a-z_]+_infer= ]]
}

func_mode_value() {    # VALUE MODE -> the MODE entry of a per-mode value, else VALUE
    local value=$1 mode=$2 item items
    if ! func_is_mode_value "$value"; then
        echo "$value"
        return 0
    fi
    IFS='|' read -ra items <<< "$value"
    for item in "${items[@]}"; do
        if [[ ${item%%=*} == "$mode" ]]; then
            echo "${item#*=}"
            return 0
        fi
    done
    # whole_infer (export a given checkpoint, then infer) infers like whole_train_whole_infer
    [[ $mode == whole_infer ]] && func_mode_value "$value" whole_train_whole_infer
}

TIPC_PLACEHOLDERS="run_dir checkpoint infer_img tipc_output"   # filled in by the drivers

func_quote() {         # VALUE -> VALUE as one shell word (printf %q), placeholders kept
    local quoted name
    printf -v quoted '%q' "$1"
    for name in $TIPC_PLACEHOLDERS; do
        quoted=${quoted//"\\{$name\\}"/"{$name}"}
    done
    echo "$quoted"
}

func_fill() {          # TEXT NAME VALUE -> TEXT with {NAME} replaced by VALUE, quoted
    local text=$1 name=$2 value
    value=$(func_quote "$3")
    echo "${text//"{$name}"/$value}"
}

func_set_params() {    # KEY VALUE -> "KEY VALUE" (VALUE quoted), or nothing for a null/empty key or value
    local key=$1 value=$2
    if [[ -z $key || $key == null || -z $value || $value == null ]]; then
        echo ""
    else
        echo "$key $(func_quote "$value")"
    fi
}

status_check() {       # STATUS COMMAND RESULTS_LOG: print and append the verdict
    local status=$1 command=$2 results_log=$3 line
    if [[ $status -eq 0 ]]; then
        line="Run successfully with command - ${command}"
    else
        line="Run failed with command - ${command}"
    fi
    mkdir -p "$(dirname "$results_log")"
    echo "$line" | tee -a "$results_log"
    return "$status"
}

# ---------------------------------------------------------------- the steps
# run_step and skip_step append to $results_log; run_step counts failures in
# $failures and prints tipc notes on stderr (the drivers set both).
note() { echo "[tipc] $*" >&2; }

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

skip_step() {  # COMMAND LOG REASON: record a step not run
    local line="Run skipped with command - $1 > $2 2>&1 ($3)"
    mkdir -p "$(dirname "$results_log")"
    echo "$line" | tee -a "$results_log"
}

# ---------------------------------------------------------------- the config
# func_load_config CONFIG MODE (the scripts' two arguments): checks them, makes
# the repo root the working directory and reads the config (func_read_config).
# Sets CONFIG (absolute path) and MODE; returns 2 with a message on bad input.
config_error() {  # MESSAGE: one error line naming the config, exit 2
    echo "error: $CONFIG: $*" >&2; exit 2
}

func_load_config() {
    if [[ $# -ne 2 ]]; then
        echo "usage: bash $0 CONFIG MODE   (MODE: ${TIPC_MODES// / | })" >&2
        return 2
    fi
    [[ -f $1 ]] || { echo "error: config $1 not found" >&2; return 2; }
    CONFIG=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
    MODE=$2
    if [[ " $TIPC_MODES " != *" $MODE "* ]]; then
        echo "error: unknown mode '$MODE' (one of: $TIPC_MODES)" >&2
        return 2
    fi
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 2
    func_read_config "$CONFIG" "$MODE" || return 2
    func_check_config
}

# ---------------------------------------------------------------- the config is data
TIPC_NAME_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]*$'      # one path component, not . or ..
TIPC_FLAG_RE='^--?[A-Za-z0-9][A-Za-z0-9_.-]*$'
TIPC_COMMAND_RE="^[A-Za-z0-9_./:=,+@%' \"-]*$"   # no $ ` \\ ; & | < > ( ) { } * ? [ ] ~ ! #
TIPC_PYTHON_RE='^[A-Za-z0-9_./-]*python[0-9.]*$'
TIPC_GPUS_RE='^(-1|[0-9]+(,[0-9]+)*)$'
TIPC_COMMAND_KEYS="norm_train pact_train fpgm_train distill_train eval norm_export infer_export \
inference 2onnx"

func_is_command() {    # VALUE -> true for "[python] SCRIPT.py ARGS" of plain characters
    local rest=${1#python } script
    script=${rest%% *}
    [[ $1 =~ $TIPC_COMMAND_RE && $script == *.py && $script != /* && $script != *..* ]]
}

func_check_config() {  # refuse, in one line (exit 2), a config that is more than data
    local i key value item
    for i in "${!CFG_KEY[@]}"; do
        key=${CFG_KEY[$i]} value=${CFG_VALUE[$i]}
        if [[ $key == -* && ! $key =~ $TIPC_FLAG_RE ]]; then
            config_error "'$key' is not a flag name (--name of letters, digits, _ . -)"
        fi
        [[ $value == null || -z $value ]] && continue
        case $key in
            model_name|train_model_name)
                [[ $value =~ $TIPC_NAME_RE ]] \
                    || config_error "$key '$value' must be a plain name (letters, digits, _ . -): it names a folder or file inside the output folder" ;;
            python)
                [[ $value =~ $TIPC_PYTHON_RE ]] \
                    || config_error "python '$value' must be a python interpreter (python, python3.10, /usr/bin/python3)" ;;
            gpu_list)
                for item in ${value//|/ }; do
                    [[ $item =~ $TIPC_GPUS_RE ]] \
                        || config_error "gpu_list entry '$item' must be -1 or GPU ids like 0,1"
                done ;;
            use-gpu|--use-gpu)
                for item in ${value//|/ }; do
                    [[ ${item,,} == true || ${item,,} == false ]] \
                        || config_error "$key value '$item' must be True or False"
                done ;;
        esac
        if [[ " $TIPC_COMMAND_KEYS " == *" $key "* ]] && ! func_is_command "$value"; then
            config_error "$key '$value' must be [python] SCRIPT.py ARGS, of letters, digits, spaces, quotes and _ . / : = , + @ % -: a config's commands are data, not shell code"
        fi
    done
}

# func_read_config FILE MODE fills the parallel arrays CFG_KEY, CFG_VALUE (the
# MODE's value already picked) and CFG_BLOCK (block number of the line).
# Returns 1, with a message, if a per-mode value has no entry for MODE.
func_read_config() {
    local file=$1 mode=$2 line block=0 key value
    CFG_KEY=() CFG_VALUE=() CFG_BLOCK=()
    if [[ ! -f $file ]]; then
        echo "error: config $file not found" >&2
        return 1
    fi
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        [[ -z ${line//[[:space:]]/} ]] && continue
        if [[ $line == '##'* || $line == '==='* ]]; then
            block=$((block + 1))
            continue
        fi
        key=$(func_parser_key "$line")
        if ! value=$(func_mode_value "$(func_parser_value "$line")" "$mode"); then
            echo "error: $file: '$key' has no value for mode $mode" >&2
            return 1
        fi
        CFG_KEY+=("$key") CFG_VALUE+=("$value") CFG_BLOCK+=("$block")
    done < "$file"
}

func_config_index() {  # KEY [BLOCK] -> index of the first line with KEY (in BLOCK)
    local key=$1 block=${2:-} i
    for i in "${!CFG_KEY[@]}"; do
        if [[ ${CFG_KEY[$i]} == "$key" && ( -z $block || ${CFG_BLOCK[$i]} == "$block" ) ]]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

func_config_get() {    # KEY [BLOCK] -> its value; "null" when the key is absent
    local i
    if i=$(func_config_index "$@"); then
        echo "${CFG_VALUE[$i]}"
    else
        echo null
    fi
}

func_config_set() {    # KEY BLOCK VALUE: set the value of KEY in BLOCK (appended if absent)
    local key=$1 block=$2 value=$3 i
    if i=$(func_config_index "$key" "$block"); then
        CFG_VALUE[i]=$value
    else
        CFG_KEY+=("$key") CFG_VALUE+=("$value") CFG_BLOCK+=("$block")
    fi
}

func_config_block() {  # KEY -> the block number of its first line
    local i
    i=$(func_config_index "$1") && echo "${CFG_BLOCK[$i]}"
}

func_config_flags() {  # BLOCK -> the block's "--flag value" lines as one string
    # Lists (a|b) are left out: the driver loops over those itself.
    local block=$1 i flags=""
    for i in "${!CFG_KEY[@]}"; do
        [[ ${CFG_BLOCK[$i]} == "$block" && ${CFG_KEY[$i]} == -* ]] || continue
        [[ ${CFG_VALUE[$i]} == *'|'* ]] && continue
        flags+=" $(func_set_params "${CFG_KEY[$i]}" "${CFG_VALUE[$i]}")"
    done
    func_squeeze "$flags"
}

func_per_process_batch() {  # COMMAND NPROCS -> COMMAND with --batch-size N made N/NPROCS
    # A config's --batch-size is the global batch of one step (the recipe's
    # 128); main_multi_gpu.py takes it per process (2 x 64). Returns 1 if
    # NPROCS does not divide it.
    local command=$1 nprocs=$2 re='(^| )--batch-size ([0-9]+)( |$)' batch
    if [[ $command =~ $re ]]; then
        batch=${BASH_REMATCH[2]}
        (( batch % nprocs == 0 )) || return 1
        command=${command/"${BASH_REMATCH[0]}"/"${BASH_REMATCH[1]}--batch-size $((batch / nprocs))${BASH_REMATCH[3]}"}
    fi
    echo "$command"
}

func_squeeze() {       # TEXT -> TEXT with runs of spaces made one, ends trimmed
    echo "$1" | tr -s ' ' | sed 's/^ //; s/ $//'
}
