#!/usr/bin/env bash
# Prepare the data a TIPC run needs.
#
#   bash test_tipc/prepare.sh CONFIG MODE
#
# lite_train_lite_infer: generates the tiny synthetic demo set (scripts/demo/data.py,
#   preset tiny: 128 train, 32 query, 128 database images of 72 px) at the
#   config's --data-path / --list-dir (datasets/demo_tiny, data/demo_tiny: both
#   git-ignored), unless its lists are already there. Takes about a second.
# whole_train_whole_infer: the data step (python -m scripts.get_data coco): the
#   HashNet authors' COCO lists into the config's --list-dir, the COCO 2014
#   images under its --data-path and, for --backbone imagenet, the ImageNet
#   AlexNet weights; verified, kept, and skipped when already there. Offline it
#   names each missing file and where to put it by hand.
# Both: puts the first query of test.txt at the config's train_infer_img_dir
#   if no image is there yet (the query of the inference step).
set -euo pipefail

# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"
func_load_config "$@" || exit 2

train_block=$(func_config_block model_name)
python=$(func_config_get python)
data_path=$(func_config_get --data-path "$train_block")
list_dir=$(func_config_get --list-dir "$train_block")
backbone=$(func_config_get --backbone "$train_block")
infer_img=$(func_config_get train_infer_img_dir)

missing() { echo "error: $*" >&2; exit 1; }

if [[ $MODE == lite_train_lite_infer ]]; then
    if [[ -f $list_dir/database.txt ]]; then
        echo "tiny demo set already in $data_path (lists in $list_dir)"
    else
        $python -m scripts.demo.data --preset tiny --image-dir "$data_path" --list-dir "$list_dir"
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
