"""Mutation check: is every recipe fact guarded by a test that fails when it breaks?

Each mutant below is one small, realistic bug (a snippet of one file replaced
by another). The runner copies the git-tracked files (as they are in the
working tree; ``git add`` a new test file first) into a temporary folder,
applies one mutant at a time to that copy (the working tree is never
touched), runs the few tests named for it (the fastest that should catch it
first; pytest stops at the first failure) and prints one line per mutant:

    killed   <name> by <test node id> (<seconds> s)
    SURVIVED <name> ...                   a bug the suite lets through
    STALE    <name>: snippet not found in <file>   (the code moved: refresh it)

and ends with ``mutants killed: K/N``. With ``--verify`` it first re-runs
every killing test on the unmutated copy: a test that fails anyway proves
nothing, and its mutant is not counted (off by default: the suite passes on
main, and the slow killers would double the run time). Not collected by pytest (the name does not start
with ``test_``); see README "For contributors".

    python tests/mutants.py               # all mutants
    python tests/mutants.py --list        # names and what each one breaks
    python tests/mutants.py --only sign_zero_is_minus_one bank_detached
    python tests/mutants.py -j 2          # two mutants at a time (two copies)
    python tests/mutants.py --verify      # also check the killers pass unmutated
    python tests/mutants.py --only no_optimizer_step --tests tests/training/test_engine.py
"""
import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 900  # seconds for one mutant's tests; a hang counts as not killed


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str                 # the recipe fact it breaks, in words
    file: str                   # path relative to the repo root
    old: str                    # exact snippet, must occur once
    new: str
    tests: tuple                # pytest node ids, fastest first


MUTANTS = [
    Mutant("caffe_steps_not_recorded", "the Caffe recipe's step lines never reach history.jsonl / VisualDL",
           "utils/training/caffe.py",
           "                self.run_log.step(done, value, lr, scale_of(criterion), iter=done)\n",
           "",
           ("tests/training/test_run_log.py::test_a_tiny_run_leaves_visualdl_records",)),
    Mutant("onnx_check_skipped", "the ONNX export is installed without its parity check",
           "utils/inference/export.py",
           "        if diff > allowed:\n            raise ExportMismatch(diff, flips, allowed)\n",
           "",
           ("tests/entrypoints/test_onnx.py::test_failed_check_installs_nothing",)),
    Mutant("onnx_size_unchecked", "an ONNX export at a size its adaptive pool cannot express goes ahead",
           "utils/inference/export.py",
           "    if fmt == \"onnx\":\n        check_onnx_size(model, image_size)\n",
           "",
           ("tests/entrypoints/test_onnx.py::test_size_onnx_cannot_express_is_one_line_and_installs_nothing",)),
    Mutant("caffe_centre_rounds", "the Caffe pipeline's centre crop rounds its offset (Caffe truncates)",
           "utils/data/caffe_pipeline.py",
           "    return (side - crop_size) // 2\n",
           "    return round((side - crop_size) / 2)\n",
           ("tests/data/test_caffe_pipeline.py::test_centre_offset_truncates",)),
    Mutant("no_optimizer_step", "the engine never calls optimizer.step()",
           "utils/training/step.py",
           "        loss.backward()\n        optimizer.step()\n",
           "        loss.backward()\n",
           ("tests/training/test_schedules.py::test_train_one_epoch_sets_lr_and_beta",
            "tests/training/test_engine.py::test_short_training_raises_map")),
    Mutant("weight_decay_ignored", "SGD gets no L2 weight decay (spec §3: 5e-4)",
           "utils/training/schedules.py",
           "momentum=momentum, parameters=parameters,\n"
           "                                         weight_decay=paddle.regularizer.L2Decay(weight_decay))",
           "momentum=momentum, parameters=parameters)",
           ("tests/training/test_schedules.py::test_build_optimizer_recipe_sgd",)),
    Mutant("lr_not_scaled_by_processes", "lr0 ignores the process count (spec §3: batch × processes / 64)",
           "utils/training/reference.py",
           "base_lr(args.learning_rate, args.batch_size, dist.world_size())",
           "base_lr(args.learning_rate, args.batch_size)",
           ("tests/training/test_schedules.py::test_engine_epoch_lr_two_processes",)),
    Mutant("beta_raised_one_epoch_late", "β(e) computed from the previous epoch",
           "utils/methods/hashnet.py",
           "return {\"beta\": continuation_beta(epoch, self.settings.step_continuation)}",
           "return {\"beta\": continuation_beta(max(epoch - 1, 1), self.settings.step_continuation)}",
           ("tests/training/test_schedules.py::test_train_one_epoch_sets_lr_and_beta",)),
    Mutant("bank_detached", "the batch's bank rows are written detached, not live (spec §2.2)",
           "utils/methods/bank.py",
           "U = paddle.scatter(self.U, ind, u, overwrite=True)",
           "U = paddle.scatter(self.U, ind, u.detach(), overwrite=True)",
           ("tests/methods/test_hashnet.py::test_gradient_includes_the_live_rows_column_terms",)),
    Mutant("pair_weights_swapped", "similar pairs weighted n/n0, dissimilar n/n1 (spec §2.6)",
           "utils/methods/hashnet.py",
           "weights = S * w_pos + (1 - S) * w_neg",
           "weights = S * w_neg + (1 - S) * w_pos",
           ("tests/methods/test_hashnet.py::test_fresh_bank_value_gradient_and_write",)),
    Mutant("unstable_softplus", "log(1 + e^D) computed directly: overflows at large D",
           "utils/methods/hashnet.py",
           "ell = paddle.log1p(paddle.exp(-paddle.abs(D))) + paddle.clip(D, min=0) - S * D",
           "ell = paddle.log1p(paddle.exp(D)) - S * D",
           ("tests/methods/test_hashnet.py::test_large_inner_products_are_stable",)),
    Mutant("hash_layer_lr_x1", "the hash layer learns at 1× instead of 10× (spec §1)",
           "utils/methods/hashnet.py",
           "    hash_lr = 10.0   # the hash layer",
           "    hash_lr = 1.0   # the hash layer",
           ("tests/models/test_model.py::test_hash_layer_learns_ten_times_faster",)),
    Mutant("ties_reversed_numpy", "equal distances ranked by descending index (numpy kernel)",
           "utils/retrieval/hamming.py",
           "top = cand[np.argsort(dist[cand], kind=\"stable\")[:depth]]",
           "top = cand[::-1][np.argsort(dist[cand[::-1]], kind=\"stable\")[:depth]]",
           ("tests/retrieval/test_metrics.py::test_map_hand_computed[numpy]",
            "tests/retrieval/test_hamming.py")),
    Mutant("ties_reversed_numba", "equal distances ranked by descending index (numba kernel)",
           "utils/retrieval/numba_kernels.py",
           "        for p in range(m):\n            j = cand[p]\n",
           "        for p in range(m - 1, -1, -1):\n            j = cand[p]\n",
           ("tests/retrieval/test_metrics.py::test_map_hand_computed[numba]",)),
    Mutant("no_hit_queries_skipped", "a query with no relevant item is dropped, not counted 0 (spec §5)",
           "utils/retrieval/metrics.py",
           "\"map\": _mean(res[\"ap\"], keep),",
           "\"map\": _mean(res[\"ap\"], res[\"has_relevant\"]),",
           ("tests/retrieval/test_metrics.py::test_map_equals_brute_force_with_ties",)),
    Mutant("sign_zero_is_minus_one", "sign(0) gives −1 instead of +1 (spec §1)",
           "utils/retrieval/codes.py",
           "np.where(z >= 0, 1, -1)",
           "np.where(z > 0, 1, -1)",
           ("tests/models/test_model.py::test_sign_codes_maps_zero_to_plus_one",)),
    Mutant("gathered_grad_not_scaled", "the gathered gradient is not multiplied by the process count",
           "utils/base/distributed.py",
           "return grad[ctx.start:ctx.stop] * float(world_size())",
           "return grad[ctx.start:ctx.stop]",
           ("tests/base/test_distributed.py::test_gathered_gradient_is_scaled_by_the_process_count",
            "tests/base/test_distributed.py::test_two_by_b_equals_one_by_two_b")),
    Mutant("optimizer_state_not_saved", "the .pdopt holds no optimizer state (momentum lost on resume)",
           "utils/base/checkpoint.py",
           "atomic_save({\"optimizer\": portable_optimizer_state(optimizer, model),",
           "atomic_save({\"optimizer\": {},",
           ("tests/base/test_checkpoint.py::test_training_state_round_trip",)),
    Mutant("rng_not_restored", "a mid-epoch resume does not restore the RNG state",
           "utils/training/reference.py",
           "            restore_rng(state[\"rng\"])\n",
           "",
           ("tests/training/test_engine.py::test_mid_epoch_resume_restores_the_rng_streams",
            "tests/training/test_engine.py::test_sigterm_mid_epoch_saves_and_resumes_exactly")),
    Mutant("list_labels_shifted", "a list line's labels are read shifted by one column",
           "utils/data/list_format.py",
           "return path, [int(v) for v in tail]",
           "return path, [int(v) for v in tail[1:] + tail[:1]]",
           ("tests/data/test_loaders.py::test_parse_list_reads_paths_and_labels",)),
    Mutant("list_path_first_field", "a list path ends at its first space (the old reader)",
           "utils/data/list_format.py",
           "path = line.strip().rsplit(None, num_class)[0].strip()",
           "path = line.split()[0]",
           ("tests/data/test_lists.py::test_paths_with_spaces_round_trip",)),
    Mutant("coco_categories_in_file_order", "COCO label columns follow the JSON's order, "
           "not category-id order", "utils/data/list_sources.py",
           'cats = sorted((c["id"], c["name"]) for c in data["categories"])',
           'cats = [(c["id"], c["name"]) for c in data["categories"]]',
           ("tests/data/test_lists.py::test_coco_lists_equal_an_independent_computation",)),
    Mutant("check_allows_queries_in_training", "the list check lets a query be a training image",
           "utils/data/list_check.py",
           'forbidden = {("train", "test")} | FORBIDDEN',
           'forbidden = set() | FORBIDDEN',
           ("tests/data/test_lists.py::test_check_finds_every_kind_of_problem",)),
    Mutant("eval_images_augmented", "test images get random crops/flips once an epoch is set",
           "utils/data/hashing_dataset.py",
           "        if self.train:\n            return train_transform(",
           "        if self.train or self.epoch:\n            return train_transform(",
           ("tests/data/test_loaders.py::test_test_transform_is_resize_short_then_center_crop",)),
    Mutant("cifar_split_other_seed", "the CIFAR-10 split is drawn with --seed, not --split_seed",
           "utils/data/loaders.py",
           "cifar10_split(classes, data.dataset, data.split_seed)",
           "cifar10_split(classes, data.dataset, data.seed)",
           ("tests/data/test_loaders.py::test_build_datasets_cifar",)),
    Mutant("export_without_eval", "the export is checked against the model in train mode "
           "(dropout on)",
           "utils/inference/export.py",
           "def dygraph_outputs(model, x):\n    model.eval()\n",
           "def dygraph_outputs(model, x):\n    model.train()\n",
           ("tests/entrypoints/test_export_infer.py::test_exported_codes_equal_dygraph_codes",)),
    Mutant("step_on_non_finite_loss", "the optimizer steps on a NaN loss (parameters become NaN)",
           "utils/training/step.py",
           "    if math.isfinite(value):\n        loss.backward()",
           "    if True:\n        loss.backward()",
           ("tests/training/test_step.py::test_non_finite_loss_takes_no_step",)),
    Mutant("checkpoint_not_atomic", "checkpoints are written in place, not to a temp file + rename",
           "utils/base/io.py",
           "                temps[path] = new_temp_file(directory, os.path.basename(path))\n"
           "                write(temps[path])\n                fsync_file(temps[path])\n",
           "                write(path)\n",
           ("tests/training/test_engine.py::test_sigkill_mid_checkpoint_write_resumes_from_previous",)),
    Mutant("cache_ignores_resize", "the code cache's fingerprint leaves out --resize_size",
           "utils/retrieval/code_cache.py",
           "\"resize_size\": int(resize_size), ",
           "",
           ("tests/retrieval/test_code_cache.py::test_stale_cache_is_rebuilt",)),
    # no code runs from a weights or data file
    Mutant("checkpoint_read_by_paddle_load", "weights are read with paddle.load (a crafted "
           ".pdparams runs its code)",
           "utils/base/checkpoint.py",
           "        state = load_paddle_file(path)\n",
           "        import paddle\n        state = paddle.load(path)\n",
           ("tests/base/test_safe_pickle.py::test_crafted_checkpoint_is_refused_without_running",)),
    Mutant("unpickler_falls_back_to_any_name", "the restricted unpickler resolves a name outside "
           "its list the ordinary way",
           "utils/base/safe_pickle.py",
           "            return allowed()[(module, name)]\n",
           "            return allowed().get((module, name)) or super().find_class(module, name)\n",
           ("tests/base/test_safe_pickle.py::test_any_other_callable_is_refused",
            "tests/base/test_safe_pickle.py::test_crafted_checkpoint_is_refused_without_running")),
    Mutant("cifar_read_by_pickle_load", "CIFAR-10 batches are read with pickle.load",
           "utils/data/loaders.py",
           "        batch = restricted_load(file, encoding=\"bytes\")\n",
           "        import pickle\n        batch = pickle.load(file, encoding=\"bytes\")\n",
           ("tests/base/test_safe_pickle.py::test_crafted_cifar_batch_is_refused",)),
    # never follow a link we did not make
    Mutant("lock_opened_through_links", "the training lock file is opened the ordinary way "
           "(a symlinked .train.lock empties its target)",
           "utils/base/run_lock.py",
           "    fd = open_own_file(path, os.O_RDWR | os.O_CREAT, \"--output-dir's lock file\")\n",
           "    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)\n",
           ("tests/base/test_run_lock.py::test_lock_refuses_a_dangling_link",
            "tests/base/test_run_lock.py::test_symlinked_train_lock_leaves_the_victim_untouched")),
    Mutant("own_files_follow_links", "files the program writes in user folders are opened "
           "without O_NOFOLLOW",
           "utils/base/io.py",
           "        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)\n",
           "        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)\n",
           ("tests/base/test_runtime.py::test_symlinked_log_file_is_refused",
            "tests/base/test_run_lock.py::test_symlinked_train_lock_leaves_the_victim_untouched")),
    # an export is one unit; leftovers of killed runs go
    Mutant("export_manifest_not_checked", "infer.py uses a folder mixing two exports",
           "utils/inference/predictor.py",
           "    verify_export(prefix, [programs[0], params, export_info_path(model_dir, bit)])\n",
           "",
           ("tests/inference/test_export.py::test_a_mix_of_two_exports_is_refused",)),
    Mutant("leftovers_kept", "temp files and folders of killed runs are never removed",
           "utils/base/io.py",
           "    freed = 0\n    try:\n        names = os.listdir(directory)\n",
           "    freed = 0\n    try:\n        names = []\n",
           ("tests/inference/test_encoder.py::test_encoder_removes_temp_folders_of_killed_runs",)),
    # an image is refused by its size after the resize
    Mutant("size_after_resize_unchecked", "only the image's size on disk is checked",
           "utils/data/images.py",
           "    if resize_size:\n        rw, rh",
           "    if False:\n        rw, rh",
           ("tests/data/test_images.py::test_query_image_is_checked_after_resize",)),
    # weights checked on load
    Mutant("non_finite_weights_loaded", "weights with NaN/inf are loaded without a word",
           "utils/base/checkpoint.py",
           "    if not finite.all():\n",
           "    if False:\n",
           ("tests/base/test_checkpoint.py::test_nan_weights_are_refused",)),
    Mutant("predictor_leaves_one_thread", "an evaluation leaves MKL on the predictor's 1 thread "
           "(later training's bits differ on some CPUs)",
           "utils/inference/predictor.py",
           "        with restoring_num_threads():   # the run leaves them at 1, process-wide\n"
           "            self.predictor.run()\n",
           "        self.predictor.run()\n",
           ("tests/inference/test_encoder.py::test_a_predictor_leaves_the_math_library_threads_as_they_were",
            "tests/inference/test_encoder.py::test_an_evaluation_leaves_dygraph_bits_with_thread_sensitive_kernels")),
    Mutant("index_ties_not_by_id", "an index re-ranks its candidates by distance only: ties in "
           "the server's order, not the database's (exact backends then differ from the scan)",
           "utils/retrieval/index/base.py",
           "order = np.lexsort((ids[row], distances[row]))",
           "order = np.argsort(distances[row], kind=\"stable\")",
           ("tests/retrieval/test_index.py::test_rank_candidates_orders_by_distance_then_id_and_pads",
            "tests/retrieval/test_index.py::test_milvus_completes_a_tie_larger_than_its_top_k_bound")),
    Mutant("milvus_tie_past_cap_not_completed", "past Milvus's 16,384-result bound the tie at "
           "the k-th distance is left in the server's order",
           "utils/retrieval/index/milvus.py",
           "        for row, t in zip(rows, kth):\n",
           "        for row, t in []:\n",
           ("tests/retrieval/test_index.py::test_milvus_tie_past_its_bound_is_completed_in_id_order",)),
    Mutant("saved_index_ignores_fingerprint", "a saved index built for other weights is reused",
           "utils/retrieval/index/saved.py",
           "    check_fingerprint(without_list(meta[\"fingerprint\"]), without_list(fingerprint), CHANGES)\n",
           "",
           ("tests/retrieval/test_index.py::test_saved_index_is_reused_extended_or_rebuilt",)),
    Mutant("grown_index_adds_everything", "a grown database's codes are all added again "
           "(duplicates) instead of only the new ones",
           "utils/retrieval/index/saved.py",
           "index.add(packed[len(index):])",
           "index.add(packed)",
           ("tests/retrieval/test_index.py::test_saved_index_is_reused_extended_or_rebuilt",)),
    # no link written through, by us or by a library we hand a path to
    Mutant("milvus_file_not_claimed", "embedded Milvus opens its milvus.db without our check: a "
           "planted link makes it write tables into the file it points to",
           "utils/retrieval/index/milvus.py",
           "            claim_file(self.where, \"--index milvus's database file\")   # never through a link\n",
           "",
           ("tests/retrieval/test_index.py::test_embedded_milvus_never_writes_through_a_planted_link",)),
    Mutant("paddle_download_through_links", "Paddle's downloader gets paths without our check: "
           "it writes through a link planted at the file or its _tmp",
           "utils/base/download.py",
           "        refuse_link(path, \"download cache file\")\n",
           "        pass\n",
           ("tests/base/test_download.py::test_paddles_downloader_never_writes_through_a_planted_link",)),
    # the restricted loader builds only plain numeric arrays, no larger than the file
    Mutant("array_dtype_unchecked", "an array is filled with whatever dtype the pickle gives it "
           "(an object dtype reads pointers from the file's bytes)",
           "utils/base/safe_pickle.py",
           "    shape, dtype, fortran, data = state[-4:]\n    if not is_plain_numeric(dtype):\n",
           "    shape, dtype, fortran, data = state[-4:]\n    if False:\n",
           ("tests/base/test_safe_pickle.py::test_an_array_is_filled_only_with_a_plain_numeric_dtype",)),
    Mutant("dtype_state_unchecked", "a dtype takes the state the pickle sets: fields and flags "
           "of its choosing",
           "utils/base/safe_pickle.py",
           "    if not simple or state != expected.__reduce__()[2]:\n",
           "    if not simple:\n",
           ("tests/base/test_safe_pickle.py::test_a_dtype_state_is_only_its_own",)),
    Mutant("declared_size_unbounded", "a pickle's declared size is read (allocated) whatever the "
           "file holds",
           "utils/base/safe_pickle.py",
           "        if n > left:\n",
           "        if False:\n",
           ("tests/base/test_safe_pickle.py::test_a_read_past_the_end_is_refused_before_it_allocates",
            "tests/base/test_safe_pickle.py::test_a_67_byte_file_cannot_ask_for_gigabytes")),
    # an output folder holds one unit
    Mutant("onnx_not_verified", "the ONNX file is used without checking it against the export's "
           "manifest",
           "utils/inference/onnx_model.py",
           "        verify_export(path[:-len(\".onnx\")], [path, info])   # its manifest, when it has one\n",
           "",
           ("tests/inference/test_export.py::test_the_onnx_file_is_verified_against_its_manifest",
            "tests/inference/test_export.py::test_a_stale_onnx_beside_a_paddle_export_is_not_used")),
    Mutant("export_keeps_the_other_format", "installing one format leaves the other format's "
           "files of the bit length in the folder",
           "utils/inference/export.py",
           "    for name in export_files(out_dir, bit):\n        if name not in written:\n",
           "    for name in []:\n        if name not in written:\n",
           ("tests/inference/test_export.py::test_installing_the_other_format_replaces_the_whole_export",)),
    Mutant("grown_list_reencodes_old_images", "the code cache encodes a grown list's old images "
           "again and appends them",
           "utils/retrieval/code_cache.py",
           "codes, new_labels = build(old)",
           "codes, new_labels = build(0)",
           ("tests/retrieval/test_code_cache.py::test_grown_list_encodes_only_the_new_entries",)),
    Mutant("tombstones_returned", "an index that cannot delete returns its removed codes",
           "utils/retrieval/index/base.py",
           "            ids = np.where(self.is_live(ids), ids, MISSING)\n",
           "",
           ("tests/contracts/test_index_backends.py::"
            "test_adds_and_removes_equal_a_build_on_the_codes_left",)),
    Mutant("journal_not_replayed", "a change killed half-way is not finished at the next start",
           "deploy/live_database.py",
           "    path = journal_path(cache)\n    if not os.path.isfile(path):",
           "    path = journal_path(cache)\n    if True:",
           ("tests/deploy/test_live_database.py::"
            "test_kill_during_an_add_is_finished_or_undone_at_the_next_start",)),
    # one per method of the comparison (HashNet's ablations, the deep and the shallow baselines)
    Mutant("no_weighting_still_weighted", "HashNet-W keeps the n/n1, n/n0 pair weights",
           "utils/methods/hashnet_ablations.py",
           "    weighted = False\n", "    weighted = True\n",
           ("tests/methods/test_hashnet_ablations.py::"
            "test_two_steps_match_the_transcription[hashnet_no_weighting]",)),
    Mutant("no_continuation_still_raises_beta", "HashNet-sgn raises β by continuation",
           "utils/methods/hashnet_ablations.py",
           "    continuation = False\n", "    continuation = True\n",
           ("tests/methods/test_hashnet_ablations.py::test_without_continuation_beta_stays_one",)),
    Mutant("continuous_similarity_without_4", "HashNet+C scales a pair's gradient by W, not 4·W",
           "utils/methods/hashnet.py",
           "scale = 4 * continuous_weight(R, y, Y)", "scale = continuous_weight(R, y, Y)",
           ("tests/methods/test_hashnet_ablations.py::"
            "test_two_steps_match_the_transcription[hashnet_continuous]",)),
    Mutant("dhn_quantization_sign_flipped", "DHN's quantization gradient pushes |h| away from 1",
           "utils/methods/dhn.py",
           "smooth.mean() + lam * K * quantization", "smooth.mean() - lam * K * quantization",
           ("tests/methods/test_dhn.py::test_loss_and_gradient_match_the_cu_transcription",)),
    Mutant("csq_centres_not_binary", "a multi-label image's CSQ centre is the sum of its label "
           "centres, not its sign (not ±1)",
           "utils/methods/csq.py",
           "return paddle.where(total == 0, tie, paddle.sign(total))",
           "return paddle.where(total == 0, tie, total)",
           ("tests/methods/test_csq.py::test_ties_and_unlabelled_rows_take_the_random_centre",
            "tests/methods/test_csq.py::test_loss_and_gradient_match_the_train_py_transcription")),
    Mutant("dpsh_bank_live", "DPSH's bank rows carry a gradient (the port writes outputs.data)",
           "utils/methods/dpsh.py",
           "U, Y = self.write(z.detach(), y, ind)", "U, Y = self.write(z, y, ind)",
           ("tests/methods/test_dpsh.py::test_the_bank_carries_no_gradient",)),
    Mutant("dsh_full_pair_derivative", "DSH trains with the derivative of its reported pairwise "
           "term, not the layer's half of it",
           "utils/methods/dsh.py",
           "pairs / 2 + lam * (rule.detach() * z).sum() / n",
           "pairs + lam * (rule.detach() * z).sum() / n",
           ("tests/methods/test_dsh.py::test_pairwise_gradient_is_half_its_derivative",)),
    Mutant("lsh_not_centred", "LSH projects the raw features, not the centred ones",
           "utils/methods/shallow/lsh.py",
           "return centred(features, self.mean) @ self.projection",
           "return features @ self.projection",
           ("tests/methods/shallow/test_lsh.py::"
            "test_codes_equal_the_reference_with_the_same_random_state",)),
    Mutant("itq_rotation_transposed", "ITQ's Procrustes step takes R = S Ŝᵀ instead of Ŝ Sᵀ",
           "utils/methods/shallow/itq.py",
           "R = right_t.T @ left.T", "R = left @ right_t",
           ("tests/methods/shallow/test_itq.py::"
            "test_codes_equal_the_reference_with_the_same_random_state[16]",)),
    Mutant("itq_cca_unscaled", "ITQ-CCA's directions are not scaled by their correlations",
           "utils/methods/shallow/itq_cca.py",
           "self.projection = W * correlations", "self.projection = W",
           ("tests/methods/shallow/test_itq_cca.py::"
            "test_codes_are_itq_on_the_correlation_scaled_directions",)),
    Mutant("sh_keeps_the_constant_mode", "SH's first bit is the constant eigenfunction",
           "utils/methods/shallow/sh.py",
           "[1:bit + 1]]", "[:bit]]",
           ("tests/methods/shallow/test_sh.py::test_modes_follow_the_eigenvalues_of_the_ranges",)),
]


# ---------------------------------------------------------------- the copy
def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def make_copy(dest):
    """The working tree's tracked files (as they are now, edits included) under dest."""
    for rel in tracked_files():
        src = os.path.join(REPO, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))  # mtimes kept: numba's cache stays valid


def pytest_run(copy, tests, timeout=TIMEOUT, first_failure=True):
    """Run ``tests`` in ``copy`` (stopping at the first failure unless told
    otherwise): (returncode, the failing node ids, seconds)."""
    env = dict(os.environ, PYTHONPATH=copy)
    env.pop("PYTEST_ADDOPTS", None)
    start = time.time()
    # Its own process group, so that a timeout or Ctrl-C also ends the
    # training processes the tests start.
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *(["-x"] if first_failure else []),
                             "-q", "-rfE", "-p", "no:cacheprovider", *tests], cwd=copy, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
            raise
        return None, [], time.time() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", stdout, flags=re.M)
    return proc.returncode, failed, time.time() - start


def run_mutant(mutant, copy):
    """Apply ``mutant`` to ``copy``, run its tests, put the file back.
    Returns (status, killer, seconds, detail)."""
    path = os.path.join(copy, mutant.file)
    if not os.path.isfile(path):
        return "STALE", None, 0.0, f"{mutant.file} does not exist"
    with open(path) as f:
        original = f.read()
    count = original.count(mutant.old)
    if count != 1:
        return "STALE", None, 0.0, (f"snippet not found in {mutant.file}" if count == 0 else
                                    f"snippet occurs {count} times in {mutant.file}")
    backup = path + ".mutant-orig"
    shutil.copy2(path, backup)
    try:
        with open(path, "w") as f:
            f.write(original.replace(mutant.old, mutant.new))
        code, failed, seconds = pytest_run(copy, mutant.tests)
    finally:
        os.replace(backup, path)  # the original bytes and mtime
    if code is None:
        return "TIMEOUT", None, seconds, f"tests ran over {TIMEOUT} s"
    if code == 0:
        return "SURVIVED", None, seconds, "tests passed: " + " ".join(mutant.tests)
    if code in (4, 5):  # a node id that does not exist, or nothing collected
        return "NO TESTS", None, seconds, "no such test: " + " ".join(mutant.tests)
    return "killed", failed[0] if failed else f"pytest exit {code}", seconds, ""


def line_for(mutant, status, killer, seconds, detail):
    if status == "killed":
        return f"killed   {mutant.name} by {killer} ({seconds:.0f} s)"
    if status == "STALE":
        return f"STALE {mutant.name}: {detail}"
    return f"{status} {mutant.name} ({seconds:.0f} s): {detail}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="mutants run at a time, each in its own copy (default 1)")
    p.add_argument("--tests", nargs="+", metavar="NODEID",
                   help="run these tests instead of each mutant's own (does this test kill it?)")
    p.add_argument("--verify", action="store_true",
                   help="count a kill only if the killing test passes on the unmutated tree")
    args = p.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28s} {m.file:24s} {m.breaks}")
        return 0
    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
        if unknown:
            p.error(f"unknown mutant(s) {', '.join(unknown)}: see --list")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.tests:
        chosen = [dataclasses.replace(m, tests=tuple(args.tests)) for m in chosen]
    jobs = max(1, min(args.jobs, len(chosen)))
    start = time.time()
    root = tempfile.mkdtemp(prefix="hashnet-mutants-")
    try:
        copies = [os.path.join(root, f"copy{i}") for i in range(jobs)]
        for c in copies:
            make_copy(c)
        free = list(copies)
        results = {}

        def job(mutant):
            copy = free.pop()
            try:
                return run_mutant(mutant, copy)
            finally:
                free.append(copy)

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(job, m): m for m in chosen}
            for future in concurrent.futures.as_completed(futures):
                m = futures[future]
                results[m.name] = future.result()
                print(line_for(m, *results[m.name]), flush=True)
        # A kill counts only if the killing test passes on the unmutated tree.
        killers = sorted({r[1] for r in results.values() if r[0] == "killed" and "::" in r[1]})
        bad = set()
        if killers and args.verify:
            code, failed, seconds = pytest_run(copies[0], killers, first_failure=False)
            if code != 0:
                bad = set(failed) or set(killers)
                print(f"the unmutated tree fails {' '.join(sorted(bad))}: mutants they killed "
                      "are not counted", flush=True)
            print(f"killing tests on the unmutated tree: {'pass' if code == 0 else 'FAIL'} "
                  f"({seconds:.0f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    killed = sum(1 for r in results.values() if r[0] == "killed" and r[1] not in bad)
    print(f"wall time {time.time() - start:.0f} s for {len(chosen)} mutants, {jobs} at a time")
    print(f"mutants killed: {killed}/{len(chosen)}")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
