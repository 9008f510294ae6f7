#!/usr/bin/env python3
"""Independent numpy reimplementation of wick's static binarization (core/src/binarize.rs).

Row i of the data gets the stream Rng::stream_indexed(0, "binarize-static", i) of
core/src/rng.rs (SplitMix64 key derivation, xoshiro256++), and pixel j is 1 if the row's j-th
uniform (next >> 11) * 2^-53 is below grey / max. Written from the documented equations, not
from wick's code paths, and vectorised across rows (each row owns its stream).

  binarize_oracle.py --tiny                  the 4x16 rows pinned in binarize.rs's unit test
  binarize_oracle.py --mnist DIR             sha256 of the static bits of MNIST (70,000 x 784,
                                             one byte 0/1 per pixel, rows in wick's order)
  binarize_oracle.py --mnist DIR --amat OUT  also check OUT/binarized_mnist_{train,valid,test}.amat
                                             (from `wick data export`) bit for bit

Prints one JSON object.
"""
import argparse
import gzip
import hashlib
import json
import os
import sys

import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix64_int(z):
    z = (z + GOLDEN) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def splitmix64_np(z):
    z = z + np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def streams(seed, name, indices):
    """xoshiro256++ states (4 arrays) of the streams (seed, name, index) for each index."""
    idx = np.asarray(indices, dtype=np.uint64)
    inner = splitmix64_np(idx + np.uint64(1)) ^ np.uint64(fnv1a64(name))
    key = splitmix64_np(np.uint64(seed) ^ splitmix64_np(inner))
    # state word k = splitmix64(key + k * golden), k = 0..3
    return [splitmix64_np(key + np.uint64((k * GOLDEN) & M64)) for k in range(4)]


def rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


def next_u64(s):
    s0, s1, s2, s3 = s
    result = rotl(s0 + s3, 23) + s0
    t = s1 << np.uint64(17)
    s2 = s2 ^ s0
    s3 = s3 ^ s1
    s1 = s1 ^ s2
    s0 = s0 ^ s3
    s2 = s2 ^ t
    s3 = rotl(s3, 45)
    s[:] = [s0, s1, s2, s3]
    return result


def static_bits(grey, max_value):
    """grey: (rows, dim) array; returns uint8 (rows, dim) of 0/1."""
    rows, dim = grey.shape
    s = streams(0, "binarize-static", np.arange(rows))
    p = grey.astype(np.float64) / float(max_value)
    out = np.empty((rows, dim), dtype=np.uint8)
    scale = 1.0 / float(1 << 53)
    with np.errstate(over="ignore"):
        for j in range(dim):
            u = (next_u64(s) >> np.uint64(11)).astype(np.float64) * scale
            out[:, j] = u < p[:, j]
    return out


def read_idx(path, header):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def find(dir_, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(dir_, name)
        if os.path.isfile(p):
            return p
    sys.exit(f"{dir_}: no {stem}[.gz]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--mnist")
    ap.add_argument("--amat")
    a = ap.parse_args()
    out = {}
    if a.tiny:
        i, j = np.meshgrid(np.arange(4), np.arange(16), indexing="ij")
        grey = (16 * j + 8 * i) % 256
        bits = static_bits(grey, 255.0)
        out["tiny"] = ["".join(str(int(b)) for b in row) for row in bits]
    if a.mnist:
        train = read_idx(find(a.mnist, "train-images-idx3-ubyte"), 16).reshape(-1, 784)
        test = read_idx(find(a.mnist, "t10k-images-idx3-ubyte"), 16).reshape(-1, 784)
        grey = np.concatenate([train, test])
        bits = static_bits(grey, 255.0)
        out["rows"] = int(bits.shape[0])
        out["sha256"] = hashlib.sha256(bits.tobytes()).hexdigest()
        out["ones_fraction"] = float(bits.mean())
        if a.amat:
            n_valid = train.shape[0] // 6
            parts = {"train": bits[: train.shape[0] - n_valid], "valid": bits[train.shape[0] - n_valid : train.shape[0]], "test": bits[train.shape[0] :]}
            for split, want in parts.items():
                got = np.loadtxt(os.path.join(a.amat, f"binarized_mnist_{split}.amat"), dtype=np.uint8)
                out[f"amat_{split}_equal"] = bool(got.shape == want.shape and (got == want).all())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
