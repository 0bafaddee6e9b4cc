"""Query / training / database splits: the HashNet protocols as presets, and
one seeded draw for all of them (list files and the in-memory CIFAR-10).

A protocol says how many queries and training images to draw (over all
images, or per class for single-label sets) and what the database is. The
presets, and where their numbers come from:

* ``coco``: 5,000 queries, 10,000 training images, the database every image
  not used for training, queries included (spec §4; the HashNet authors'
  lists: 10,000 / 5,000 / 112,218 of the 122,218 labelled COCO 2014 images).
  Images with no label are dropped (the paper prunes them).
* ``nuswide``: the paper's NUS-WIDE protocol: 5,000 queries, the database
  every other image, 10,000 training images drawn from the database. Images
  with none of the concepts are kept, as in the authors' lists (22% of their
  training rows are all-zero, thuml/HashNet#44).
* ``imagenet100``: the queries are every image of the validation source
  (``--queries_from``), the database every image of the training source, and
  130 training images per class are drawn from the database: the paper says
  100, the authors' lists hold 130 per class (13,000) and the authors confirm
  that those are what the results used (thuml/HashNet#20).
* ``cifar10``, ``cifar10-1``, ``cifar10-2``: the three CIFAR-10 protocols of
  DeepHash-pytorch (spec §4): 100 queries and 500 training images per class,
  the database the rest (cifar10) or the rest plus the training images
  (cifar10-1); 1,000 queries and 5,000 training images per class, the
  database the training images (cifar10-2).

The draw: ``numpy.random.default_rng(seed)``; per class, one permutation of
the class's candidates in class order; over all images, one permutation of
the candidates. The first ``test`` drawn are queries, the next ``train``
training images; each split is returned in the source's order.
"""
import dataclasses

import numpy as np

from utils.base.errors import UserError

SPLITS = ("train", "test", "database")   # the three lists of a data set, in this order

# what the database holds besides the images neither queried nor trained on
DATABASES = {
    "rest": "neither queries nor training images",
    "rest+train": "every image but the queries (training images included)",
    "rest+queries": "every image but the training images (queries included)",
    "train": "the training images",
}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """``test``: queries to draw (per class if ``per_class``), or None when a
    second source gives every query; ``train``: training images to draw;
    ``database``: a key of DATABASES; ``unlabelled``: "drop" or "keep"
    images without any label."""
    test: object
    train: int
    database: str
    per_class: bool = False
    unlabelled: str = "drop"

    def describe(self):
        per = " per class" if self.per_class else ""
        queries = "every image of --queries_from" if self.test is None else f"{self.test:,}{per}"
        return (f"queries: {queries}; training: {self.train:,}{per}; database: "
                f"{DATABASES[self.database]}; images without labels: {self.unlabelled}")


PROTOCOLS = {
    "coco": Protocol(5000, 10000, "rest+queries"),
    "nuswide": Protocol(5000, 10000, "rest+train", unlabelled="keep"),
    "imagenet100": Protocol(None, 130, "rest+train", per_class=True),
    "cifar10": Protocol(100, 500, "rest", per_class=True),
    "cifar10-1": Protocol(100, 500, "rest+train", per_class=True),
    "cifar10-2": Protocol(1000, 5000, "train", per_class=True),
}


def single_label_classes(labels):
    """Class id of each row; UserError unless every row has exactly one label."""
    counts = labels.sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if len(bad):
        raise UserError(f"counts per class need one label per image, but {len(bad):,} images "
                        f"have {int(counts[bad[0]])} or another count (e.g. image #{bad[0]}): "
                        "give counts over all images instead (no --per_class)")
    return labels.argmax(axis=1)


def draw_per_class(classes, num_class, candidates, n_test, n_train, rng, class_names=None):
    """(test, train, rest) index arrays: per class, in class order, one
    permutation of its candidates."""
    test, train, rest = [], [], []
    for c in range(num_class):
        pool = candidates[classes[candidates] == c]
        if len(pool) < n_test + n_train:
            name = class_names[c] if class_names else str(c)
            raise UserError(f"class {name} has {len(pool):,} images, fewer than the "
                            f"{n_test:,} queries + {n_train:,} training images per class asked")
        idx = rng.permutation(pool)
        test.append(idx[:n_test])
        train.append(idx[n_test:n_test + n_train])
        rest.append(idx[n_test + n_train:])
    return tuple(np.concatenate(x) if x else np.zeros(0, np.int64) for x in (test, train, rest))


def draw_over_all(candidates, n_test, n_train, rng):
    if len(candidates) < n_test + n_train:
        raise UserError(f"{len(candidates):,} images, fewer than the {n_test:,} queries + "
                        f"{n_train:,} training images asked: lower --test / --train")
    idx = rng.permutation(candidates)
    return idx[:n_test], idx[n_test:n_test + n_train], idx[n_test + n_train:]


def draw_split(labels, protocol, seed, fixed_queries=None, class_names=None):
    """{"train", "test", "database"}: sorted row indices of ``labels`` [n, C].

    ``fixed_queries`` (bool [n]): rows that are the queries, all of them
    (imagenet100's validation images); the others are the candidates."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    fixed = np.zeros(n, bool) if fixed_queries is None else np.asarray(fixed_queries, bool)
    candidates = np.flatnonzero(~fixed)
    n_test = 0 if fixed_queries is not None else protocol.test
    if protocol.per_class:
        classes = single_label_classes(labels)
        test, train, rest = draw_per_class(classes, labels.shape[1], candidates, n_test,
                                           protocol.train, rng, class_names)
    else:
        test, train, rest = draw_over_all(candidates, n_test, protocol.train, rng)
    if fixed_queries is not None:
        test = np.flatnonzero(fixed)
    database = {"rest": [rest], "rest+train": [rest, train], "rest+queries": [rest, test],
                "train": [train]}[protocol.database]
    parts = {"train": train, "test": test, "database": np.concatenate(database)}
    for split, idx in parts.items():
        if not len(idx):
            raise UserError(f"the {split} split would be empty: lower --test / --train, or "
                            "choose another --database")
    return {split: np.sort(idx) for split, idx in parts.items()}
