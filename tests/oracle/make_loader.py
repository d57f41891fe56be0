"""Oracle for the loader section of higan.h: image resampling (cv2 / PIL), the official style and
augmentation pipeline of one word, and the official lexicon rules.

References (the libraries HiGAN+ itself calls):
  - cv2.resize INTER_AREA / INTER_LINEAR (python3-opencv; Debian's 4.6),
  - PIL Image.resize BILINEAR / LANCZOS (= ANTIALIAS) (python3-pil; Debian's 9.4),
  - torchvision's ToTensor + Normalize(0.5, 0.5) written out in torch (x.float() / 255, then
    (x - 0.5) / 0.5, float32),
  - lib/alphabet.py get_lexicon, copied below line for line.
Run: /usr/bin/python3 make_loader.py (from tests/oracle). Needs python3-opencv and python3-pil.
"""
import os
import tempfile

import sys

try:
    import cv2
except ImportError:   # the committed fixtures stay as they are
    print("make_loader.py: skipped, needs OpenCV (apt-get install python3-opencv)")
    sys.exit(0)
import numpy as np
import PIL
import torch
from PIL import Image

import oracle_util

SEED = 1234
rng = np.random.RandomState(SEED)
torch.manual_seed(SEED)
LANCZOS = Image.LANCZOS
BILINEAR = Image.BILINEAR


def u8(a):
    return torch.from_numpy(np.array(a, dtype=np.uint8))


def f32(a):
    return torch.from_numpy(np.array(a, dtype=np.float32))


def blobs(h, w):
    """A word-like uint8 image: dark background, bright strokes, some mid grays."""
    img = np.zeros((h, w), np.float64)
    for _ in range(max(2, w // 6)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sy, sx = rng.uniform(0.8, 3.0), rng.uniform(0.8, 3.0)
        yy, xx = np.mgrid[0:h, 0:w]
        img += 255 * np.exp(-((yy - cy) ** 2 / (2 * sy * sy) + (xx - cx) ** 2 / (2 * sx * sx)))
    img += rng.uniform(0, 12, size=(h, w))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


out = {}

# ---- cv2 ------------------------------------------------------------------------------------
# (src h, src w, dst h, dst w): shrinking by fractional and integer factors (width only, as the
# style path, and in 2-D), 2x2 (the rounding-up fast path), enlarging, mixed directions.
# Width-only cases (as the style path) use a few rows: rows are independent there.
cv_cases = [
    (3, 150, 3, 96), (3, 97, 3, 32), (3, 128, 3, 64), (3, 96, 3, 32),
    (9, 31, 4, 10), (8, 14, 4, 7), (12, 18, 4, 6), (3, 23, 3, 96), (5, 7, 9, 13),
    (6, 40, 11, 12), (11, 9, 5, 20), (2, 33, 2, 160), (3, 200, 3, 37), (1, 5, 1, 3),
]
for kind, interp in (("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR)):
    for i, (sh, sw, dh, dw) in enumerate(cv_cases):
        src = blobs(sh, sw)
        out["%s_u8_%d.src" % (kind, i)] = u8(src)
        out["%s_u8_%d.dst" % (kind, i)] = u8(cv2.resize(src, (dw, dh), interpolation=interp))
        srcf = (src.astype(np.float32) / 255.0 * 2 - 1) * 1.5 + rng.normal(0, 0.05, src.shape).astype(np.float32)
        srcf = srcf.astype(np.float32)
        out["%s_f32_%d.src" % (kind, i)] = f32(srcf)
        out["%s_f32_%d.dst" % (kind, i)] = f32(cv2.resize(srcf, (dw, dh), interpolation=interp))

# ---- PIL ------------------------------------------------------------------------------------
pil_cases = [
    (3, 150, 3, 96), (3, 130, 3, 160), (3, 128, 3, 96), (3, 40, 3, 32), (3, 33, 3, 64),
    (7, 23, 7, 9), (9, 12, 5, 30), (6, 20, 14, 8), (5, 3, 5, 32), (2, 300, 2, 64), (1, 4, 1, 4),
]
for kind, flt in (("pil_lanczos", LANCZOS), ("pil_bilinear", BILINEAR)):
    for i, (sh, sw, dh, dw) in enumerate(pil_cases):
        src = blobs(sh, sw)
        out["%s_u8_%d.src" % (kind, i)] = u8(src)
        out["%s_u8_%d.dst" % (kind, i)] = u8(np.asarray(Image.fromarray(src, mode="L").resize((dw, dh), flt)))
        srcf = ((src.astype(np.float32) / 255.0) * 2 - 1 + rng.normal(0, 0.05, src.shape)).astype(np.float32)
        out["%s_f32_%d.src" % (kind, i)] = f32(srcf)
        out["%s_f32_%d.dst" % (kind, i)] = f32(np.asarray(Image.fromarray(srcf, mode="F").resize((dw, dh), flt)))


# ---- one word through the official style + augmentation pipeline ----------------------------
# lib/datasets.py Hdf5Dataset.__getitem__ (process_style) and lib/transforms.py RandomClip /
# RandomScale with their random draws fixed here: (width, label length, clip width, clip
# offset, ratio). The C test feeds the same draws through its kernels.
def to_tensor_normalize(pic):
    x = torch.from_numpy(np.array(pic, np.uint8, copy=True)).float().div(255)
    return (x - 0.5) / 0.5


def recalc_len(leng, scale=32):
    tmp = leng % scale
    return leng + scale - tmp if tmp != 0 else leng


def word_image(w):
    """Deterministic 64 x w test image, also computed by the C test (no need to store it)."""
    y, x = np.mgrid[0:64, 0:w].astype(np.int64)
    v = (x * 37 + y * 11 + (x * y) % 13 * 29) % 256
    v = np.where((x // 5 + y // 7) % 3 == 0, 0, v)
    return v.astype(np.uint8)


ROWS = slice(20, 28)   # rows stored (rows are resampled independently)
pipe = {}
pipe_cases = [(150, 4, 100, 17, 0.25), (70, 3, 96, 0, -0.3), (260, 5, 131, 20, -0.05),
              (33, 2, 64, 0, 0.39), (180, 9, 200, 55, -0.399), (90, 4, 128, 0, 0.0)]
for i, (w, n_chars, cw, off, ratio) in enumerate(pipe_cases):
    img = word_image(w)
    new_w = 32 * n_chars
    interp = cv2.INTER_AREA if new_w < w else cv2.INTER_LINEAR
    style = Image.fromarray(cv2.resize(img.copy(), (new_w, 64), interpolation=interp), mode="L")
    pic = style
    width, height = pic.size
    if width > 128:                      # RandomClip with the fixed draws
        assert 128 <= cw < width and 0 <= off < width - cw
        pic = pic.crop((off, 0, off + cw, height))
    else:
        cw, off = width, 0
    width, height = pic.size             # RandomScale with the fixed ratio
    nw = recalc_len(int(width * (1 + ratio)))
    pic = pic.resize((nw, height), BILINEAR if ratio > 0 else LANCZOS)
    # ratio's sign picks the filter; nw is int(width * (1 + ratio)) rounded up to 32 in float64
    pipe["pipe_%d.params" % i] = torch.tensor([w, n_chars, cw, off, nw, 1 if ratio > 0 else 0], dtype=torch.int64)
    pipe["pipe_%d.style" % i] = u8(np.array(style)[ROWS])     # uint8, before ToTensor/Normalize
    pipe["pipe_%d.aug" % i] = u8(np.array(pic)[ROWS])

pipe["pixel_lut"] = to_tensor_normalize(Image.fromarray(np.arange(256, dtype=np.uint8).reshape(1, 256), mode="L"))


# ---- lexicon ------------------------------------------------------------------------------
def get_lexicon(path, true_alphabet, max_length=20, ignore_case=True):   # lib/alphabet.py
    words = []
    try:
        with open(path, 'r', encoding='utf-8') as f:
            for line in f.readlines():
                line = line.strip()
                if len(line) < 2:
                    continue

                word = ''.join(ch for ch in line if ch in true_alphabet)
                if len(word) != len(line) or len(word) >= max_length:
                    continue
                if ignore_case:
                    word = word.lower()
                words.append(word)
    except FileNotFoundError as e:
        print(e)
    return words


ALPHABET = '` ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789\'-"/,.+_!#&():;?'
# the library's alphabet leaves out the blank '`' (the official 'iam_word' string has it)
LIB_ALPHABET = ALPHABET[1:]
lex_text = ("Hello\n"
            "  World  \r\n"
            "a\n"
            "\n"
            "   \n"
            "ok\r"
            "x y\n"
            "Caf\u00e9\n"
            "na\u00efve\n"
            "abcdefghijklmnopqrs\n"          # 19 characters: kept
            "abcdefghijklmnopqrst\n"         # 20: dropped
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
            "\tTab\t\n"
            "\u00a0nbsp\u2003\n"                 # Unicode spaces are stripped by str.strip()
            "\x1cfs\x1f\n"
            "don't\n"
            "e-mail\n"
            "back`tick\n"
            "semi;colon?\n"
            "tilde~\n"
            "UPPER\n"
            "upper\n"
            "\u00c5ngstr\u00f6m\n"
            "\ufeffbom\n"
            "it's\r\n"
            "1984\n"
            "last-line-no-newline")
with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".txt") as f:
    f.write(lex_text.encode("utf-8"))
    lex_path = f.name
words = get_lexicon(lex_path, LIB_ALPHABET, max_length=20)
words_official = get_lexicon(lex_path, ALPHABET, max_length=20)
os.unlink(lex_path)
# the one documented difference: the official keeps 'back`tick'
assert [w for w in words_official if "`" not in w] == words
pipe["lexicon.text"] = u8(np.frombuffer(lex_text.encode("utf-8"), np.uint8))
pipe["lexicon.words"] = u8(np.frombuffer("\n".join(words).encode("utf-8"), np.uint8))
print("lexicon:", words)

here = os.path.dirname(os.path.abspath(__file__))
cv = {k: v for k, v in out.items() if not k.startswith("pil")}
pil = {k: v for k, v in out.items() if k.startswith("pil")}
for name, tensors in (("loader_cv2", cv), ("loader_pil", pil), ("loader_pipeline", pipe)):
    path = os.path.join(here, name + ".safetensors")
    oracle_util.save(path, tensors, seed=SEED, opencv=cv2.__version__, pillow=PIL.__version__,
                     numpy=np.__version__)
    print("wrote", path, os.path.getsize(path), "bytes")
