"""The sample contract every data set of the project keeps: (image, label,
dataset index), with the recipe's transforms and ``--skip-bad-images``."""
import logging

import numpy as np
import paddle

from utils.base.errors import UserError
from utils.data.transforms import test_transform, train_transform


class HashingDataset(paddle.io.Dataset):
    """Base: subclasses give ``labels`` [n, C] and ``image(i)`` -> PIL RGB."""

    def __init__(self, labels, resize_size, crop_size, train, seed=0, skip_bad_images=False,
                 pipeline=None):
        self.labels = labels
        self.pipeline = pipeline   # None: the reference transforms; else a CaffePipeline
        self.resize_size, self.crop_size = resize_size, crop_size
        self.train, self.seed, self.epoch = train, seed, 0
        self.skip_bad_images = skip_bad_images

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        try:
            img = self.image(index)
        except UserError as err:
            if not self.skip_bad_images:
                raise
            logging.getLogger("hashnet").warning(f"skipped: {err}")
            return None  # dropped by collate_skipping
        return self.transform(img, index), self.labels[index], np.int64(index)

    def augmentation_rng(self, index):
        """The sample's crop and flip stream, keyed by (seed, epoch, index)."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def transform(self, img, index):
        if self.pipeline is not None:
            if self.train:
                return self.pipeline.train(img, self.resize_size, self.crop_size,
                                           self.augmentation_rng(index))
            return self.pipeline.test(img, self.resize_size, self.crop_size)
        if self.train:
            return train_transform(img, self.resize_size, self.crop_size, self.augmentation_rng(index))
        return test_transform(img, self.resize_size, self.crop_size)
