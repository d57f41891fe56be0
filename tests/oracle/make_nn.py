"""Oracle fixtures for the normalisation ops of higan.h (tests/test_nn.c).

Writes nn_spectral_norm, nn_batch_norm, nn_cond_batch_norm and nn_embedding .safetensors.
Run from tests/oracle (as `make oracle` does) with /usr/bin/python3 (torch 1.13).
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


# ---- BigGAN spectral norm (networks/BigGAN_layers.py, num_svs=1, num_itrs=1) ----------------
def biggan_sn(weight, u0, sv0, training, eps=1e-8):
    """One SN.W_() call of BigGAN: returns weight / sigma; updates u0, sv0 when training."""
    W = weight.view(weight.size(0), -1)
    with torch.no_grad():
        v = F.normalize(torch.matmul(u0, W), eps=eps)
        u = F.normalize(torch.matmul(v, W.t()), eps=eps)
        if training:
            u0[:] = u
    sv = torch.squeeze(torch.matmul(torch.matmul(v, W.t()), u.t()))   # gradient through W
    if training:
        with torch.no_grad():
            sv0[:] = sv
    return weight / sv


def make_spectral_norm():
    seed = 1
    torch.manual_seed(seed)
    T = {}
    # conv-shaped weight [out=5, 3, 2, 2] -> W [5, 12]; linear-shaped [7, 4]
    for tag, shape in (("conv", (5, 3, 2, 2)), ("lin", (7, 4))):
        w0 = torch.randn(*shape)
        u_init = torch.randn(1, shape[0])
        dy = torch.randn(*shape)
        T[tag + "_w"] = w0
        T[tag + "_u0"] = u_init
        T[tag + "_dy"] = dy
        for mode, training in (("train", True), ("eval", False)):
            w = w0.clone().requires_grad_(True)
            u0 = u_init.clone()
            sv0 = torch.zeros(1)
            y = biggan_sn(w, u0, sv0, training)
            y.backward(dy)
            T["%s_%s_y" % (tag, mode)] = y
            T["%s_%s_dw" % (tag, mode)] = w.grad
            T["%s_%s_u0" % (tag, mode)] = u0      # eval: unchanged
            T["%s_%s_sv0" % (tag, mode)] = sv0    # eval: untouched (0)
        # a second train step from the updated u0 (the power iteration carries on)
        w = w0.clone().requires_grad_(True)
        u0 = u_init.clone()
        sv0 = torch.zeros(1)
        biggan_sn(w, u0, sv0, True)
        y = biggan_sn(w, u0, sv0, True)
        T[tag + "_train2_y"] = y
        T[tag + "_train2_u0"] = u0
        T[tag + "_train2_sv0"] = sv0
    oracle_util.save(out("nn_spectral_norm.safetensors"), T, seed=seed)


def make_batch_norm():
    seed = 2
    torch.manual_seed(seed)
    N, C, H, W = 2, 3, 5, 7
    x0 = torch.randn(N, C, H, W) * 1.5 + 0.7
    weight = torch.randn(C)
    bias = torch.randn(C)
    rm0 = torch.randn(C) * 0.3
    rv0 = torch.rand(C) + 0.5
    dy = torch.randn(N, C, H, W)
    T = {"x": x0, "weight": weight, "bias": bias, "running_mean": rm0, "running_var": rv0,
         "dy": dy, "num_batches_tracked": torch.tensor([3], dtype=torch.int64)}
    for affine in (True, False):
        for mode, training in (("train", True), ("eval", False)):
            bn = nn.BatchNorm2d(C, eps=1e-5, momentum=0.1, affine=affine)
            with torch.no_grad():
                if affine:
                    bn.weight.copy_(weight)
                    bn.bias.copy_(bias)
                bn.running_mean.copy_(rm0)
                bn.running_var.copy_(rv0)
                bn.num_batches_tracked.fill_(3)
            bn.train(training)
            x = x0.clone().requires_grad_(True)
            y = bn(x)
            y.backward(dy)
            p = ("affine_" if affine else "plain_") + mode + "_"
            T[p + "y"] = y
            T[p + "dx"] = x.grad
            if affine:
                T[p + "dweight"] = bn.weight.grad
                T[p + "dbias"] = bn.bias.grad
            T[p + "running_mean"] = bn.running_mean
            T[p + "running_var"] = bn.running_var
            T[p + "num_batches_tracked"] = bn.num_batches_tracked.reshape(1)
    oracle_util.save(out("nn_batch_norm.safetensors"), T, seed=seed)


def make_cond_batch_norm():
    seed = 3
    torch.manual_seed(seed)
    N, C, H, W = 2, 3, 5, 7
    eps = 1e-4          # not the BN default: the eps argument is exercised
    x0 = torch.randn(N, C, H, W) * 0.8 - 0.4
    gain0 = torch.randn(N, C) * 0.5
    bias0 = torch.randn(N, C) * 0.5
    sm0 = torch.randn(C) * 0.2
    sv0 = torch.rand(C) + 0.6
    dy = torch.randn(N, C, H, W)
    T = {"x": x0, "gain": gain0, "bias": bias0, "stored_mean": sm0, "stored_var": sv0, "dy": dy}
    for mode, training in (("train", True), ("eval", False)):
        x = x0.clone().requires_grad_(True)
        gain = gain0.clone().requires_grad_(True)
        bias = bias0.clone().requires_grad_(True)
        sm = sm0.clone()
        sv = sv0.clone()
        # HiGAN+ ccbn.forward with norm_style 'bn'
        g = (1 + gain).view(N, -1, 1, 1)
        b = bias.view(N, -1, 1, 1)
        y = F.batch_norm(x, sm, sv, None, None, training, 0.1, eps) * g + b
        y.backward(dy)
        T[mode + "_y"] = y
        T[mode + "_dx"] = x.grad
        T[mode + "_dgain"] = gain.grad
        T[mode + "_dbias"] = bias.grad
        T[mode + "_stored_mean"] = sm
        T[mode + "_stored_var"] = sv
    oracle_util.save(out("nn_cond_batch_norm.safetensors"), T, seed=seed)


def make_embedding():
    seed = 4
    torch.manual_seed(seed)
    num, D = 8, 5
    w0 = torch.randn(num, D) * 0.6      # norms around 1.3: most rows above max_norm
    w0[2] *= 0.5                        # a looked-up row below max_norm (left alone)
    w0[7] *= 2.0                        # never looked up: above max_norm, must stay unchanged
    idx = torch.tensor([[3, 0, 5, 3, 1], [6, 2, 0, 3, 4]], dtype=torch.int64)
    dy = torch.randn(2, 5, D)
    T = {"weight": w0, "idx": idx, "dy": dy}
    for tag, max_norm in (("renorm", 1.0), ("plain", None)):
        w = w0.clone().requires_grad_(True)
        y = F.embedding(idx, w, padding_idx=0, max_norm=max_norm)
        y.backward(dy)
        T[tag + "_weight_after"] = w.detach()
        T[tag + "_y"] = y
        T[tag + "_dweight"] = w.grad
    oracle_util.save(out("nn_embedding.safetensors"), T, seed=seed)


if __name__ == "__main__":
    make_spectral_norm()
    make_batch_norm()
    make_cond_batch_norm()
    make_embedding()
