"""Oracle for the model section of higan.h (tests/test_model.c): a tiny deploy checkpoint written by
torch.save, and what the networks make of it.

Writes
    tests/oracle/model_deploy.pth        torch.save({'Generator': G.state_dict(),
                                         'StyleEncoder': E.state_dict(), 'StyleBackbone':
                                         B.state_dict(), 'Epoch': 7}), the layout of the
                                         official deploy_HiGAN+.pth at reduced widths
    tests/oracle/model_deploy_out.safetensors
        z, out_z                 a style and G(z, "Hi!") in eval mode [1, 1, 64, 96]
        img_shrink, resized_shrink, mu_shrink
                                 a 64 x 150 reference of 3 characters, resized to 96 px
                                 with OpenCV's INTER_AREA (re-implemented below), and the
                                 StyleEncoder's mu of it (eval)
        img_grow, resized_grow, mu_grow
                                 the same for a 64 x 50 reference (INTER_LINEAR, enlarging)
        out_style                G(mu_shrink, "Hi!") in eval mode

The modules come from make_biggan.py and make_styler.py (official structure and
state_dict keys). Tiny configuration, the same in test_model.c: Generator ch 2, style_dim 8,
embed_dim 8, bottom 4; StyleBackbone resolution 2, max_dim 32; StyleEncoder 32 -> 8.
Weights are float32 (as saved); the references are computed in float64.

    cd tests/oracle && /usr/bin/python3 make_model.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

import make_biggan
import make_styler
import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))
ALPHABET = "` ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'-\"/,.+_!#&():;?"
TEXT = "Hi!"
STYLE_DIM = 8


def cv2_area_weights(ssize, dsize):
    """cv2.resize INTER_AREA along one shrinking axis (computeResizeAreaTab), float32
    weights as OpenCV keeps them: W [dsize, ssize]."""
    scale = ssize / dsize
    W = np.zeros((dsize, ssize), dtype=np.float64)
    for dx in range(dsize):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, ssize - fsx1)
        sx1, sx2 = int(np.ceil(fsx1)), int(np.floor(fsx2))
        sx2 = min(sx2, ssize - 1)
        sx1 = min(sx1, sx2)
        if sx1 - fsx1 > 1e-3:
            W[dx, sx1 - 1] += np.float32((sx1 - fsx1) / cell)
        for sx in range(sx1, sx2):
            W[dx, sx] += np.float32(1.0 / cell)
        if fsx2 - sx2 > 1e-3:
            W[dx, sx2] += np.float32(min(min(fsx2 - sx2, 1.0), cell) / cell)
    return torch.from_numpy(W)


def resize_width(img, new_w):
    """process_style: [64, w] -> [64, new_w], INTER_AREA when shrinking, else INTER_LINEAR
    (half-pixel centres, clamped: the same as torch's linear with align_corners=False)."""
    h, w = img.shape
    if new_w < w:
        return img.double() @ cv2_area_weights(w, new_w).t()
    x = img.double().view(1, 1, h, w)
    return F.interpolate(x, size=(h, new_w), mode='bilinear', align_corners=False).view(h, new_w)


def reference(seed, w):
    torch.manual_seed(seed)
    x = torch.rand(64, w) * 2.0 - 1.0
    x[:, int(w * 0.8):] = -1.0
    x[:6, :] = -1.0
    return x


def main():
    torch.manual_seed(21)
    G = make_biggan.Generator(ch=2, style_dim=STYLE_DIM, embed_dim=8, n_class=80, bottom=4, input_nc=1)
    make_biggan.randomise_stats(G)
    labels = torch.tensor([[ALPHABET.index(c) for c in TEXT]])
    lens = torch.tensor([len(TEXT)])
    with torch.no_grad():   # a looked-up row above max_norm 1, so the renorm is exercised
        G.text_embedding.weight[labels[0, 0]] *= 60.0
    B = make_styler.StyleBackbone(2, 32)
    E = make_styler.StyleEncoder(STYLE_DIM, B.out_dim)
    make_styler.randomize(B)
    make_styler.randomize(E)
    with torch.no_grad():   # mu of order 1, like a N(0, 1) style (randomize gives ~10)
        E.mu.weight.mul_(0.1)
        E.mu.bias.mul_(0.1)
    torch.save({'Generator': G.state_dict(), 'StyleEncoder': E.state_dict(),
                'StyleBackbone': B.state_dict(), 'Epoch': 7},
               os.path.join(HERE, 'model_deploy.pth'))

    G.double().eval()
    B.double().eval()
    E.double().eval()
    T = {}
    with torch.no_grad():
        z = torch.randn(1, STYLE_DIM)
        T['z'] = z
        T['out_z'] = G(z.double(), labels, lens)
        new_w = 32 * len(TEXT)
        for tag, w, seed in (('shrink', 150, 5), ('grow', 50, 6)):
            img = reference(seed, w)
            r = resize_width(img, new_w)
            feat, _ = B(r.view(1, 1, 64, new_w))
            _, mu, _ = E(feat, torch.tensor([new_w]))
            T['img_' + tag] = img
            T['resized_' + tag] = r
            T['mu_' + tag] = mu
        T['out_style'] = G(T['mu_shrink'].float().double(), labels, lens)
    oracle_util.save(os.path.join(HERE, 'model_deploy_out.safetensors'), T, seed=21, text=TEXT,
                     G='ch=2 style_dim=8 embed_dim=8 bottom=4', B='resolution=2 max_dim=32')


if __name__ == '__main__':
    main()
