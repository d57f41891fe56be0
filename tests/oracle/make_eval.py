"""Oracle fixtures for the eval section of higan.h (tests/test_eval.c).

Reference implementations: the official HiGAN+ metric code (metric/fid_kid_is.py:
calculate_frechet_distance with scipy.linalg.sqrtm, polynomial_mmd with sklearn's polynomial
kernel written out in numpy), skimage.metrics (0.19: structural_similarity,
peak_signal_noise_ratio) and torch.nn.functional.interpolate (networks/utils.py
rescale_images). Needs python3-torch, python3-numpy, python3-scipy, python3-skimage (Debian).
Inputs are drawn in float32 (as stored), the references computed in float64 from them.
"""
import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from skimage import metrics

import oracle_util

SEED = 1234


def frechet(mu1, s1, mu2, s2):
    """calculate_frechet_distance of metric/fid_kid_is.py (eps path unused here)."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def fid(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def poly_kernel(x, y):
    # sklearn.metrics.pairwise.polynomial_kernel(x, y, degree=3, gamma=None, coef0=1)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(a, b):
    """_mmd2_and_variance 'unbiased' for equal sizes; its natural extension to unequal ones."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    kxx, kyy, kxy = poly_kernel(a, a), poly_kernel(b, b), poly_kernel(a, b)
    m, n = len(a), len(b)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.sum() / (m * n))


def main():
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    out = {}

    # FID: full-rank covariances (n > d), different means and correlations
    d = 6
    mix = rng.normal(size=(d, d)).astype(np.float32)
    fa = rng.normal(size=(40, d)).astype(np.float32)
    fb = (rng.normal(size=(50, d)) @ (0.5 * mix + np.eye(d)) + 0.3).astype(np.float32)
    out["fid_a"], out["fid_b"] = fa, fb
    out["fid_ab"] = np.array([fid(fa, fb)])
    out["fid_ba"] = np.array([fid(fb, fa)])

    # MMD^2 with the cubic kernel: equal sizes (the official estimator) and unequal sizes
    d = 7
    ka = rng.normal(size=(30, d)).astype(np.float32)
    kb = (rng.normal(size=(30, d)) * 1.2 + 0.2).astype(np.float32)
    kc = (rng.normal(size=(23, d)) + 0.5).astype(np.float32)
    out["kid_a"], out["kid_b"], out["kid_c"] = ka, kb, kc
    out["mmd2_ab"] = np.array([mmd2_unbiased(ka, kb)])
    out["mmd2_ac"] = np.array([mmd2_unbiased(ka, kc)])

    # symmetric eigenvalues (ascending)
    s = rng.normal(size=(9, 9))
    s = (s + s.T).astype(np.float32)
    out["eig_in"] = s
    out["eig_w"] = np.linalg.eigvalsh(s.astype(np.float64))

    # PSNR / SSIM (skimage, data_range 1, win 7): a blurred random image and a noisy copy
    H, W = 64, 23
    x = rng.uniform(size=(H, W))
    x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1)) / 3
    y = np.clip(x + rng.normal(scale=0.1, size=(H, W)), 0, 1)
    x, y = x.astype(np.float32), y.astype(np.float32)
    out["ssim_x"], out["ssim_y"] = x, y
    out["ssim"] = np.array([metrics.structural_similarity(x.astype(np.float64), y.astype(np.float64),
                                                          win_size=7, data_range=1.0)])
    out["psnr"] = np.array([metrics.peak_signal_noise_ratio(x.astype(np.float64), y.astype(np.float64),
                                                            data_range=1.0)])
    # smallest image skimage accepts: 7 x 7 (one window)
    x2 = rng.uniform(size=(7, 9)).astype(np.float32)
    y2 = rng.uniform(size=(7, 9)).astype(np.float32)
    out["ssim_x2"], out["ssim_y2"] = x2, y2
    out["ssim2"] = np.array([metrics.structural_similarity(x2.astype(np.float64), y2.astype(np.float64),
                                                           win_size=7, data_range=1.0)])

    # rescale_images: F.interpolate 'area' when shrinking, 'bilinear' (align_corners False) otherwise
    img = torch.rand(1, 1, 5, 96) * 2 - 1
    out["rescale_in"] = img[0, 0].numpy()
    for w in (53, 96, 101, 250, 7):
        mode = "area" if 96 > w else "bilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        out["rescale_%d" % w] = F.interpolate(img, (5, w), mode=mode, **kw)[0, 0].numpy()

    oracle_util.save("eval_metrics.safetensors",
                     {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()},
                     seed=SEED, scipy=__import__("scipy").__version__,
                     skimage=__import__("skimage").__version__)
    print("wrote eval_metrics.safetensors")


if __name__ == "__main__":
    main()
