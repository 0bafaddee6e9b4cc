#!/usr/bin/env bash
# Prepare the data a TIPC run needs.
#
#   bash test_tipc/prepare.sh CONFIG MODE
#
# lite_train_lite_infer (and any mode of the tiny sets demo, coco_lite):
#   generates a tiny synthetic set (scripts/demo/data.py)
#   at the config's --data-path / --list-dir unless its lists are already
#   there, in about a second: for --dataset demo the tiny demo set (128 train,
#   32 query, 128 database images of 72 px; datasets/demo_tiny, data/demo_tiny),
#   for any other dataset (the reference's coco_lite) the COCO layout the
#   reference's config expects: <data-path>/train2014, val2014 and 80-label
#   lists in data/<dataset> (20 train, 4 query, 16 database images of 96 px).
#   A config without --backbone random trains on the ImageNet backbone: it is
#   fetched once (python -m scripts.get_data backbone).
# whole_train_whole_infer, whole_infer on COCO: the data step (python -m scripts.get_data coco): the
#   HashNet authors' COCO lists into the config's --list-dir, the COCO 2014
#   images under its --data-path and, for --backbone imagenet, the ImageNet
#   AlexNet weights; verified, kept, and skipped when already there. Offline it
#   names each missing file and where to put it by hand.
# Both: puts the first query of test.txt at the config's train_infer_img_dir
#   (or the inference block's --img-path) if no image is there yet (the query
#   of the inference step).
set -euo pipefail

# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"
func_load_config "$@" || exit 2

train_block=$(func_config_block model_name)
python=$(func_config_get python)
data_path=$(func_config_get --data-path "$train_block")
list_dir=$(func_config_get --list-dir "$train_block")
backbone=$(func_config_get --backbone "$train_block")
dataset=$(func_config_get --dataset "$train_block")
infer_img=$(func_config_get train_infer_img_dir)
[[ $infer_img != null ]] || infer_img=$(func_config_get --img-path "$(func_config_block inference)")
if [[ $dataset == null ]]; then   # the reference writes it into the command: --dataset='coco_lite'
    re="--dataset[= ]'?([A-Za-z0-9_-]+)"
    [[ $(func_config_get "$(func_config_get trainer)") =~ $re ]] && dataset=${BASH_REMATCH[1]}
fi
[[ $dataset != null ]] || dataset=coco
[[ $list_dir != null ]] || list_dir=data/$dataset
[[ $backbone != null ]] || backbone=imagenet   # main_single_gpu.py's default
missing() { echo "error: $*" >&2; exit 1; }

if [[ $MODE == lite_train_lite_infer || $dataset == demo || $dataset == coco_lite ]]; then
    if [[ -f $list_dir/database.txt ]]; then
        echo "tiny $dataset set already in $data_path (lists in $list_dir)"
    elif [[ $dataset == demo ]]; then
        $python -m scripts.demo.data --preset tiny --image-dir "$data_path" --list-dir "$list_dir"
    else
        $python -m scripts.demo.data --preset coco_lite --layout coco --image-dir "$data_path" \
            --list-dir "$list_dir"
    fi
    if [[ $backbone == imagenet ]]; then
        $python -m scripts.get_data backbone
    fi
else
    extra=()
    [[ $backbone == imagenet ]] && extra=(--with-backbone)
    $python -m scripts.get_data coco --root "$data_path" --list-dir "$list_dir" "${extra[@]}"
    if [[ $backbone != random && $backbone != null && $backbone != imagenet && ! -f $backbone ]]; then
        missing "backbone $backbone not found: convert ImageNet AlexNet weights with" \
            "python -m scripts.convert_alexnet alexnet-owt-7be5be79.pth $backbone"
    fi
    echo "COCO lists in $list_dir, images under $data_path, backbone $backbone: found"
fi

if [[ ! -f $infer_img ]]; then
    # the list rule (utils/data/list_format.py): the path is all but the last C fields
    query=$($python -c 'import sys; from utils.data.list_format import list_num_class, parse_list
print(parse_list(sys.argv[1], list_num_class(sys.argv[1]))[0][0])' "$list_dir/test.txt")
    [[ -f $data_path/$query ]] || missing "first query $data_path/$query not found"
    mkdir -p "$(dirname "$infer_img")"
    cp "$data_path/$query" "$infer_img"
fi
echo "inference query image: $infer_img"
