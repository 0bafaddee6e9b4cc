"""utils/data/loaders.py: list files, transforms, the sharded sampler and
CIFAR-10 (spec §4); a --list-dir that is a file, and a split whose labels
are all 0, refused in one line."""
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from support.errors import user_error
from utils.data.list_format import parse_list
from utils.data.loaders import (ArrayImages, ImageList, ShardedBatchSampler, build_datasets,
                                cifar10_split, read_cifar10)
from utils.data.transforms import load_rgb
from utils.training.config import data_settings, parse_args


MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet, spec §4


STD = np.array([0.229, 0.224, 0.225])


def write(path, text):
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- list files


def test_parse_list_reads_paths_and_labels(tmp_path):
    path = write(tmp_path / "l.txt", "a/1.jpg 0 1 1\n\nb/2.jpg 1 0 0\n")
    paths, labels = parse_list(path, 3)
    assert paths == ["a/1.jpg", "b/2.jpg"]
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, [[0, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize("text,lineno", [
    ("a.jpg 0 1 0\nb.jpg 0 1\n", 2),              # too few labels
    ("a.jpg 0 1 0\nb.jpg 0 1 0\nc.jpg 0 1 0 1\n", 3),  # too many labels
    ("\na.jpg 0 1 0\n\nb.jpg\n", 4),              # no labels; blank lines still count
])
def test_wrong_label_count_names_file_and_line(tmp_path, text, lineno):
    path = write(tmp_path / "train.txt", text)
    message = user_error(parse_list, path, 3)
    assert f"{path}:{lineno}" in message


@pytest.mark.parametrize("bad", ["2", "0.5", "-1", "x", "1.0"])
def test_non_binary_label_names_file_and_line(tmp_path, bad):
    path = write(tmp_path / "test.txt", f"a.jpg 0 1 0\nb.jpg 1 {bad} 0\n")
    assert f"{path}:2" in user_error(parse_list, path, 3)


def test_empty_list(tmp_path):
    path = write(tmp_path / "database.txt", "\n  \n")
    message = user_error(parse_list, path, 3)
    assert path in message and "empty" in message


def test_missing_list_file(tmp_path):
    path = str(tmp_path / "nope" / "train.txt")
    assert path in user_error(parse_list, path, 3)


def test_missing_image_names_list_file_and_line(demo, tmp_path):
    lines = open(os.path.join(demo.list_dir, "train.txt")).read().splitlines()[:3]
    lines[1] = "images/does_not_exist.jpg " + lines[1].split(" ", 1)[1]
    path = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    data = ImageList(path, demo.image_dir, 10, resize_size=72, crop_size=64, train=False)
    message = user_error(data.check_files)
    assert f"{path}:2" in message and "does_not_exist.jpg" in message


def test_missing_data_root(demo, tmp_path):
    data = ImageList(os.path.join(demo.list_dir, "test.txt"), str(tmp_path / "no_root"), 10,
                     resize_size=72, crop_size=64, train=False)
    assert "no_root" in user_error(data.check_files)


def test_corrupt_image(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert "bad.jpg" in user_error(load_rgb, str(tmp_path / "bad.jpg"))


def test_demo_lists_load_with_expected_sizes(demo):
    args = parse_args(["--dataset", "demo", "--data-path", demo.image_dir,
                       "--list-dir", demo.list_dir, "--crop_size", "64", "--resize_size", "72"])
    sets = build_datasets(data_settings(args))
    sizes = {k: len(v) for k, v in sets.items()}
    assert sizes == demo.counts
    assert sets["train"].train and not sets["test"].train and not sets["database"].train
    # database = every non-training image, queries included
    assert set(sets["test"].paths) <= set(sets["database"].paths)
    assert not set(sets["train"].paths) & set(sets["database"].paths)


def test_training_list_dir_that_is_a_file(make_args, a_file):
    message = user_error(build_datasets, data_settings(make_args("--list-dir", a_file)))
    assert message.startswith(f"--list-dir {a_file} is a file, not a folder")


def test_a_split_with_only_zero_labels_is_refused(make_args, demo, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "test", "database"):
        text = open(os.path.join(demo.list_dir, f"{split}.txt")).read()
        if split == "test":
            text = "".join(line.split()[0] + " 0" * 10 + "\n" for line in text.splitlines())
        (lists / f"{split}.txt").write_text(text)
    args = make_args("--list-dir", str(lists))
    message = user_error(build_datasets, data_settings(args))
    assert "test.txt: every line's labels are all 0" in message


# ---------------------------------------------------------------- transforms


def solid(rgb, w, h):
    return np.tile(np.array(rgb, dtype=np.uint8), (h, w, 1))


@pytest.mark.float_sensitive
@pytest.mark.parametrize("train", [True, False])
def test_transform_shape_and_normalisation(train):
    rgb = (255, 0, 128)
    data = ArrayImages(solid(rgb, 90, 80)[None], np.array([[0, 1]], dtype=np.float32),
                       resize_size=72, crop_size=64, train=train, seed=0)
    x, y, ind = data[0]
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    expected = (np.array(rgb) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(x.reshape(3, -1).mean(axis=1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.reshape(3, -1).std(axis=1), 0, atol=1e-5)
    assert y.dtype == np.float32 and list(y) == [0, 1]
    assert ind == 0 and np.asarray(ind).dtype == np.int64


@pytest.mark.float_sensitive
def test_test_transform_is_resize_short_then_center_crop():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(80, 100, 3), dtype=np.uint8)  # h 80, w 100
    data = ArrayImages(img[None], np.zeros((1, 2), np.float32), resize_size=72, crop_size=64,
                       train=False)
    # short side 80 -> 72: 100 x 80 becomes 90 x 72; centre 64 x 64 starts at (13, 4)
    ref = Image.fromarray(img).resize((90, 72), Image.BILINEAR).crop((13, 4, 77, 68))
    ref = ((np.asarray(ref, np.float64) / 255 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(data[0][0], ref, atol=1e-5)
    data.set_epoch(5)  # the test transform draws nothing: still the same centre crop
    np.testing.assert_allclose(data[0][0], ref, atol=1e-5)


@pytest.fixture(scope="module")
def noise_images():
    return np.random.default_rng(1).integers(0, 256, size=(4, 72, 72, 3), dtype=np.uint8)


def augmented(images, index, seed, epoch):
    data = ArrayImages(images, np.zeros((len(images), 2), np.float32), resize_size=72,
                       crop_size=64, train=True, seed=seed)
    data.set_epoch(epoch)
    return data[index][0]


def test_augmentation_reproducible_per_seed_epoch_index(noise_images):
    a = augmented(noise_images, 2, seed=5, epoch=3)
    b = augmented(noise_images, 2, seed=5, epoch=3)  # a fresh dataset object: the same draws
    np.testing.assert_array_equal(a, b)


def test_augmentation_changes_with_epoch_and_seed(noise_images):
    first = augmented(noise_images, 1, seed=0, epoch=1)
    assert any(not np.array_equal(first, augmented(noise_images, 1, 0, e)) for e in range(2, 6))
    assert any(not np.array_equal(first, augmented(noise_images, 1, s, 1)) for s in range(1, 5))


@pytest.mark.float_sensitive
def test_augmentation_is_a_crop_or_its_mirror(noise_images):
    """Each train sample is a 64 px window of the 72 px image, maybe flipped;
    across epochs both flips and several offsets occur."""
    img = (noise_images[0] / 255.0 - MEAN) / STD
    seen = set()
    for epoch in range(12):
        x = augmented(noise_images, 0, 0, epoch).transpose(1, 2, 0)
        matches = [(top, left, flip) for top in range(9) for left in range(9) for flip in (0, 1)
                   if np.allclose((img[:, ::-1] if flip else img)[top:top + 64, left:left + 64],
                                  x, atol=1e-4)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert {f for _, _, f in seen} == {0, 1} and len(seen) > 4


# ---------------------------------------------------------------- sampler


def batches(size, batch, world, rank, epoch=0, shuffle=True, seed=0):
    sampler = ShardedBatchSampler(size, batch, shuffle, seed=seed, rank=rank, world_size=world)
    sampler.set_epoch(epoch)
    out = list(sampler)
    assert len(sampler) == len(out)
    return out


@pytest.mark.parametrize("size", [96, 100])
def test_two_shards_cover_one_process_with_double_batch(size):
    single = batches(size, 16, 1, 0, epoch=2)
    r0, r1 = batches(size, 8, 2, 0, epoch=2), batches(size, 8, 2, 1, epoch=2)
    assert len(r0) == len(r1) == len(single) == -(-size // 16)
    for step, whole in enumerate(single):
        assert sorted(r0[step] + r1[step]) == sorted(whole)
        assert not set(r0[step]) & set(r1[step])


def test_shards_pad_odd_size_with_the_head():
    """101 items on 2 shards: 102 slots, the extra one repeats the first item;
    len() is ceil(ceil(101/2)/8) = 7 for each."""
    single = batches(101, 16, 1, 0, epoch=1)
    r0, r1 = batches(101, 8, 2, 0, epoch=1), batches(101, 8, 2, 1, epoch=1)
    assert len(r0) == len(r1) == 7 and len(single) == 7
    for step in range(6):
        assert sorted(r0[step] + r1[step]) == sorted(single[step])
    last = r0[6] + r1[6]
    assert sorted(last) == sorted(single[6] + [single[0][0]])
    covered = [i for b in r0 + r1 for i in b]
    assert sorted(set(covered)) == list(range(101)) and len(covered) == 102


@pytest.mark.parametrize("size,batch,world,expected", [
    (10, 3, 1, 4), (12, 3, 1, 4), (10, 3, 2, 2), (11, 3, 2, 2), (13, 3, 2, 3), (5, 2, 4, 1)])
def test_sampler_len(size, batch, world, expected):
    assert all(len(batches(size, batch, world, r)) == expected for r in range(world))


def test_sampler_more_processes_than_twice_the_items():
    """1 query on 3 processes: every rank must still get one (padded) batch,
    as len() says, or the ranks disagree on the number of steps."""
    got = [batches(1, 4, 3, r) for r in range(3)]
    assert got == [[[0]], [[0]], [[0]]]


def test_sampler_shuffles_per_epoch_and_keeps_order_without_shuffle():
    assert batches(20, 20, 1, 0, epoch=1) != batches(20, 20, 1, 0, epoch=2)
    assert batches(20, 20, 1, 0, epoch=1) == batches(20, 20, 1, 0, epoch=1)
    assert sorted(batches(20, 20, 1, 0, epoch=1)[0]) == list(range(20))
    assert batches(7, 3, 1, 0, shuffle=False) == [[0, 1, 2], [3, 4, 5], [6]]


# ---------------------------------------------------------------- CIFAR-10


BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def fake_cifar(root, per_batch=4, seed=0):
    """Write a CIFAR python-format folder; return (folder, data rows, labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows, labels = [], []
    for name in BATCH_NAMES:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": lab, b"batch_label": name.encode()}, f)
        rows.append(data)
        labels += lab
    return folder, np.concatenate(rows), np.array(labels)


def check_cifar(images, classes, rows, labels):
    assert images.shape == (len(rows), 32, 32, 3) and images.dtype == np.uint8
    # CIFAR rows are 1024 R, then 1024 G, then 1024 B values, row-major
    np.testing.assert_array_equal(images[5, 2, 7], rows[5][[2 * 32 + 7, 1024 + 2 * 32 + 7,
                                                            2048 + 2 * 32 + 7]])
    np.testing.assert_array_equal(images, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(classes, labels)


def test_read_cifar10_folder(tmp_path):
    folder, rows, labels = fake_cifar(tmp_path)
    check_cifar(*read_cifar10(str(folder)), rows, labels)


def test_read_cifar10_tar_gz(tmp_path):
    folder, rows, labels = fake_cifar(tmp_path / "src")
    archive = str(tmp_path / "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(folder), arcname="cifar-10-batches-py")
    check_cifar(*read_cifar10(archive), rows, labels)


def test_read_cifar10_errors(tmp_path):
    folder, _, _ = fake_cifar(tmp_path)
    assert "nowhere" in user_error(read_cifar10, str(tmp_path / "nowhere"))
    os.remove(folder / "data_batch_3")
    assert "data_batch_3" in user_error(read_cifar10, str(folder))


@pytest.fixture(scope="module")
def cifar_classes():
    """Class ids of a CIFAR-10-sized set: 6,000 per class, shuffled."""
    return np.random.default_rng(0).permutation(np.repeat(np.arange(10), 6000))


@pytest.mark.parametrize("name,sizes,per_class", [
    ("cifar10", (5000, 1000, 54000), (500, 100, 5400)),
    ("cifar10-1", (5000, 1000, 59000), (500, 100, 5900)),
    ("cifar10-2", (50000, 10000, 50000), (5000, 1000, 5000))])
def test_cifar_split_sizes(cifar_classes, name, sizes, per_class):
    train, test, db = cifar10_split(cifar_classes, name, seed=0)
    assert (len(train), len(test), len(db)) == sizes
    for part, n in zip((train, test, db), per_class):
        assert np.all(np.bincount(cifar_classes[part], minlength=10) == n)
        assert len(np.unique(part)) == len(part)
    assert not set(train) & set(test)
    assert not set(test) & set(db)  # queries never in the database


def test_cifar_database_composition(cifar_classes):
    train, test, db = cifar10_split(cifar_classes, "cifar10", seed=3)
    assert not set(db) & set(train)
    assert sorted(np.concatenate([train, test, db])) == list(range(60000))
    train1, test1, db1 = cifar10_split(cifar_classes, "cifar10-1", seed=3)
    assert set(db1) == set(db) | set(train)  # the same draw, database plus train
    np.testing.assert_array_equal(train1, train)
    np.testing.assert_array_equal(test1, test)
    train2, _, db2 = cifar10_split(cifar_classes, "cifar10-2", seed=3)
    np.testing.assert_array_equal(db2, train2)


def test_cifar_split_seeded(cifar_classes):
    a = cifar10_split(cifar_classes, "cifar10", seed=7)
    b = cifar10_split(cifar_classes, "cifar10", seed=7)
    c = cifar10_split(cifar_classes, "cifar10", seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_build_datasets_cifar(tmp_path):
    folder, rows, labels = fake_cifar(tmp_path, per_batch=1200, seed=1)
    args = parse_args(["--dataset", "cifar10-1", "--data-path", str(folder), "--seed", "9",
                       "--split_seed", "4", "--crop_size", "32", "--resize_size", "32"])
    sets = build_datasets(data_settings(args))
    train, test, db = cifar10_split(labels, "cifar10-1", seed=4)  # --split_seed, not --seed
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for split, idx in (("train", train), ("test", test), ("database", db)):
        data = sets[split]
        assert len(data) == len(idx) and data.train == (split == "train")
        np.testing.assert_array_equal(data.labels, np.eye(10)[labels[idx]])
        np.testing.assert_array_equal(data.images, images[idx])
    x, y, i = sets["test"][3]
    assert x.shape == (3, 32, 32) and i == 3


def test_resize_short_truncates_the_long_side_like_torchvision():
    from PIL import Image
    from utils.data.transforms import resize_short
    assert resize_short(Image.new("RGB", (640, 427)), 256).size == (383, 256)
    assert resize_short(Image.new("RGB", (427, 640)), 256).size == (256, 383)


def test_cifar_split_is_shared_by_training_seeds(tmp_path):
    """The split has its own seed (default 0): runs with other --seed values
    (the 16/32/48/64-bit recipe seeds) are evaluated on the same queries."""
    folder, _, _ = fake_cifar(tmp_path, per_batch=1200, seed=1)

    def queries(*flags):
        args = parse_args(["--dataset", "cifar10", "--data-path", str(folder),
                           "--crop_size", "32", "--resize_size", "32", *flags])
        return build_datasets(data_settings(args), ("test",))["test"].images

    default = queries("--seed", "0")
    np.testing.assert_array_equal(queries("--seed", "2000"), default)
    np.testing.assert_array_equal(queries("--seed", "2000", "--split_seed", "0"), default)
    assert not np.array_equal(queries("--seed", "0", "--split_seed", "1"), default)


# The reference's config_dataset (utils/datasets.py there): name -> (num_class, topK)
REFERENCE_PRESETS = {"cifar10": (10, -1), "cifar10-1": (10, -1), "cifar10-2": (10, -1),
                     "nuswide_21": (21, 5000), "nuswide_21_m": (21, 5000),
                     "nuswide_81_m": (81, 5000), "coco": (80, 5000), "coco_lite": (80, 5000),
                     "imagenet": (100, 1000), "mirflickr": (38, -1), "voc2012": (20, -1)}


@pytest.mark.parametrize("name", sorted(REFERENCE_PRESETS))
def test_reference_dataset_names_are_accepted(name):
    """Every --dataset the reference knew, with its class count and topK;
    coco_lite is the one its TIPC configs use (lists in data/coco_lite)."""
    args = parse_args(["--dataset", name])
    assert (args.num_class, args.topK) == REFERENCE_PRESETS[name]
    assert args.list_dir == os.path.join("data", name)


@pytest.mark.parametrize("batch, fragment", [
    ([1, 2], "holds no uint8 [n, 3072] image rows"),
    ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}, "holds no uint8 [n, 3072]"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "holds no class id 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "holds no class id 0..9"),
], ids=["a list", "short rows", "class 10", "a label short"])
def test_a_cifar_batch_of_the_wrong_shape_is_one_line(tmp_path, batch, fragment):
    folder, _, _ = fake_cifar(tmp_path)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump(batch, f)
    assert f"data_batch_2 {fragment}" in user_error(read_cifar10, str(folder))


def test_fuzzed_cifar_batch_is_read_or_refused_in_one_line(tmp_path_factory):
    from hypothesis import given
    from support.fuzz import FUZZ, mutated, one_line_or_result
    from utils.data.loaders import cifar_batch
    folder, _, _ = fake_cifar(tmp_path_factory.mktemp("fuzzed_cifar"), per_batch=2)
    seeds = [(folder / name).read_bytes() for name in BATCH_NAMES[:2]]

    @FUZZ
    @given(data=mutated(seeds))
    def fuzz(data):
        (folder / "fuzzed_batch").write_bytes(data)
        with open(folder / "fuzzed_batch", "rb") as f:
            read = one_line_or_result(cifar_batch, f, "fuzzed_batch")
        assert read is None or read[0].shape == (len(read[1]), 3072)
    fuzz()
