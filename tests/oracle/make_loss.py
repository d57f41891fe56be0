"""PyTorch oracle for the GAN losses of higan.h (the loss section of higan.h).

Re-implements, with the same torch operations, HiGAN+'s losses (networks/loss.py and
networks/model.py of github.com/ganji15/HiGANplus):
  hinge    D: mean(relu(1 - d_real)), mean(relu(1 + d_fake));  G: -mean(d_fake)
  masked   recn_l1_loss(img1, img2, img_lens)
  kl       KLloss(mu, logvar)
  cx       CXLoss(sigma=0.5, b=1.0)(featureT, featureI)
Gradients come from autograd, seeded with a scalar dy (stored as "dy").
Writes tests/oracle/loss_*.safetensors next to this script.
"""
import os

import torch
import torch.nn.functional as F

import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


def grads(loss, inputs, dy):
    return torch.autograd.grad(loss, inputs, grad_outputs=dy)


# ---- HiGAN+ formulas ---------------------------------------------------------------
def len2mask(length, max_len):
    return (torch.arange(max_len, dtype=length.dtype).expand(len(length), max_len)
            < length.unsqueeze(1)).float()


def recn_l1_loss(img1, img2, img_lens):
    mask = len2mask(img_lens, img1.size(-1))
    diff = (img1 - img2) * mask.view(mask.size(0), 1, 1, mask.size(1))
    return diff.abs().sum() / (diff.size(1) * diff.size(2) * img_lens.sum())


def kl_loss(mu, logvar):
    return torch.mean(-0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp(), dim=1), dim=0)


def cx_loss(featT, featI, sigma=0.5, b=1.0):
    # centre both by the target's channel mean (over batch, H, W), in that order
    meanT = featT.mean(0, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
    featI, featT = featI - meanT, featT - meanT
    featI = featI.div(featI.norm(p=2, dim=1, keepdim=True))
    featT = featT.div(featT.norm(p=2, dim=1, keepdim=True))
    dist = []
    for i in range(featT.size(0)):
        t_i = featT[i].unsqueeze(0)
        i_i = featI[i].unsqueeze(0)
        _, C, H, W = t_i.shape
        patches = t_i.view(1, 1, C, H * W).permute((3, 2, 0, 1))     # [P, C, 1, 1]
        dist.append(F.conv2d(i_i, patches))                           # [1, P, HI, WI]
    dist = torch.cat(dist, dim=0)
    raw = (1. - dist) / 2.
    div = torch.min(raw, dim=1, keepdim=True)[0]                      # min over target p
    rel = raw / (div + 1e-5)
    Wt = torch.exp((b - rel) / sigma)
    cx = Wt.div(Wt.sum(dim=1, keepdim=True))                          # softmax over p
    cx = torch.mean(cx.max(dim=3)[0].max(dim=2)[0], dim=1)            # max over q, mean over p
    return torch.mean(-torch.log(cx + 1e-5))


# ---- fixtures -------------------------------------------------------------------------
def away_from(x, kink, gap=0.05):
    """Push values within gap of kink away from it (hinge kinks)."""
    d = x - kink
    near = d.abs() < gap
    return torch.where(near, kink + torch.sign(d + 1e-12) * gap, x)


def make_hinge(seed=11):
    torch.manual_seed(seed)
    dy = torch.tensor(1.3)
    x = (torch.randn(2, 1, 3, 5) * 1.5)
    x = away_from(away_from(x, 1.0), -1.0).requires_grad_()
    y_real = torch.mean(F.relu(1.0 - x))
    y_fake = torch.mean(F.relu(1.0 + x))
    y_g = -torch.mean(x)
    t = {"x": x, "dy": dy.reshape(1), "y_real": y_real.reshape(1), "y_fake": y_fake.reshape(1),
         "y_g": y_g.reshape(1)}
    t["dx_real"], = grads(y_real, [x], dy)
    t["dx_fake"], = grads(y_fake, [x], dy)
    t["dx_g"], = grads(y_g, [x], dy)
    oracle_util.save(out("loss_hinge.safetensors"), t, seed=seed)


def make_masked_l1(seed=12):
    torch.manual_seed(seed)
    dy = torch.tensor(0.7)
    a = torch.randn(3, 2, 5, 7, requires_grad=True)
    b = torch.randn(3, 2, 5, 7, requires_grad=True)
    lens = torch.tensor([4, 7, 9], dtype=torch.int64)   # 9 > W: mask clipped, divisor not
    y = recn_l1_loss(a, b, lens)
    da, db = grads(y, [a, b], dy)
    oracle_util.save(out("loss_masked_l1.safetensors"),
                     {"a": a, "b": b, "lens": lens, "dy": dy.reshape(1), "y": y.reshape(1),
                      "da": da, "db": db}, seed=seed)


def make_kl(seed=13):
    torch.manual_seed(seed)
    dy = torch.tensor(1.7)
    mu = torch.randn(3, 6, requires_grad=True)
    logvar = (torch.randn(3, 6) * 0.8).requires_grad_()
    y = kl_loss(mu, logvar)
    dmu, dlv = grads(y, [mu, logvar], dy)
    oracle_util.save(out("loss_kl.safetensors"),
                     {"mu": mu, "logvar": logvar, "dy": dy.reshape(1), "y": y.reshape(1),
                      "dmu": dmu, "dlogvar": dlv}, seed=seed)


def make_cx(seed=14):
    torch.manual_seed(seed)
    t = {}
    # case a: different spatial sizes for target and inference, like HiGAN+'s real vs fake
    ft = torch.randn(2, 8, 3, 4, requires_grad=True)
    fi = torch.randn(2, 8, 2, 5, requires_grad=True)
    # case b: inference near the target (small minimum distances, amplified by
    # r / (min + 1e-5)), more channels
    ft2 = torch.randn(3, 16, 2, 6, requires_grad=True)
    fi2 = (ft2.detach() + 0.6 * torch.randn(3, 16, 2, 6)).requires_grad_()
    # case c: larger maps, closer to HiGAN+'s feature sizes
    ft3 = torch.randn(2, 16, 4, 12, requires_grad=True)
    fi3 = torch.randn(2, 16, 4, 10, requires_grad=True)
    cases = {"a": (ft, fi, 1.0), "b": (ft2, fi2, 0.6), "c": (ft3, fi3, 1.1)}
    for tag, (a, b, dy) in cases.items():
        y = cx_loss(a, b)
        da, db = grads(y, [a, b], torch.tensor(dy))
        t.update({tag + "_ft": a, tag + "_fi": b, tag + "_dy": torch.tensor([dy]),
                  tag + "_y": y.reshape(1), tag + "_dft": da, tag + "_dfi": db})
    oracle_util.save(out("loss_cx.safetensors"), t, seed=seed)


if __name__ == "__main__":
    torch.set_num_threads(1)
    make_hinge()
    make_masked_l1()
    make_kl()
    make_cx()
