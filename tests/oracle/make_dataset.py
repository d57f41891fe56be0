"""Fixture for tests/test_dataset.c: a tiny word dataset written by h5py exactly as HiGAN+'s
Hdf5Dataset.gen_h5file writes it (lib/datasets.py), plus the same arrays as safetensors.

Writes dataset_official.hdf5 and dataset_official.safetensors. Needs python3-h5py (apt);
without it the script says so and leaves the committed files alone."""
import itertools
import sys

import numpy as np
import torch

import oracle_util

try:
    import h5py
except ImportError:
    print("make_dataset.py: h5py is not installed (apt-get install python3-h5py); fixtures left unchanged")
    sys.exit(0)

WIDTHS = [5, 17, 64, 3]
TEXTS = ["A", "Hello,", "it's", "1990"]
WIDS = [672, 3, 3, 150]


def image(word, w):
    y, x = np.meshgrid(np.arange(64), np.arange(w), indexing="ij")
    return ((word * 37 + y * 11 + x * 3) & 255).astype(np.uint8)


def gen_h5file(all_imgs, all_texts, all_wids, save_path):
    # same arrays, dtypes and options as the official gen_h5file
    img_seek_idxs, img_lens, cur = [], [], 0
    for img in all_imgs:
        img_seek_idxs.append(cur)
        img_lens.append(img.shape[-1])
        cur += img.shape[-1]
    lb_seek_idxs, lb_lens, cur = [], [], 0
    for lb in all_texts:
        lb_seek_idxs.append(cur)
        lb_lens.append(len(lb))
        cur += len(lb)
    save_imgs = np.concatenate(all_imgs, axis=-1)
    save_lbs = [ord(ch) for ch in itertools.chain(*all_texts)]
    with h5py.File(save_path, "w") as h5f:
        h5f.create_dataset("imgs", data=save_imgs, compression="gzip", compression_opts=4, dtype=np.uint8)
        h5f.create_dataset("lbs", data=save_lbs, dtype=np.int32)
        h5f.create_dataset("img_seek_idxs", data=img_seek_idxs, dtype=np.int64)
        h5f.create_dataset("img_lens", data=img_lens, dtype=np.int16)
        h5f.create_dataset("lb_seek_idxs", data=lb_seek_idxs, dtype=np.int64)
        h5f.create_dataset("lb_lens", data=lb_lens, dtype=np.int16)
        h5f.create_dataset("wids", data=all_wids, dtype=np.int16)
    return save_imgs, save_lbs, img_seek_idxs, img_lens, lb_seek_idxs, lb_lens


imgs = [image(i, w) for i, w in enumerate(WIDTHS)]
arrs = gen_h5file(imgs, TEXTS, WIDS, "dataset_official.hdf5")
names = ["imgs", "lbs", "img_seek_idxs", "img_lens", "lb_seek_idxs", "lb_lens"]
dtypes = [np.uint8, np.int32, np.int64, np.int16, np.int64, np.int16]
tensors = {n: torch.from_numpy(np.asarray(a, dtype=d)) for n, a, d in zip(names, arrs, dtypes)}
tensors["wids"] = torch.from_numpy(np.asarray(WIDS, dtype=np.int16))
oracle_util.save("dataset_official.safetensors", tensors, seed=None)
print("wrote dataset_official.hdf5 and dataset_official.safetensors")
