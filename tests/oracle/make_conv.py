"""PyTorch oracle for conv2d and linear of higan.h (the gemm section of higan.h, tests/test_conv.c).

Each fixture holds the float32 inputs x, w (and b when the layer has a bias), a random
upstream gradient dy, the forward output y and the gradients dx, dw (, db). The references
are computed in float64 from the float32 inputs, so they carry no float32 rounding of
their own and the C results can be held to fp32 tolerances.

Configurations (HiGAN+ uses the first four):
  conv_3x3p1   3x3, stride 1, padding 1, bias (BigGAN blocks, recogniser)
  conv_5x5s2   5x5, stride 2, padding 0, bias (style encoder stem)
  conv_1x1     1x1, stride 1, no bias (learnable shortcuts)
  conv_asym    F.pad(x, (left 1, right 2, top 0, bottom 1)) then a 3x3 unpadded conv, bias
  conv_s21     3x3, stride (2, 1), padding 1, more channels (several GEMM tiles)
  conv_1x1s2   1x1, stride 2, padding 0, bias (a 1x1 that still needs im2col)
  conv_linear  linear on 2-D x [N, IN] with bias (suffix _2d) and on 3-D x [B, T, IN]
               without bias (suffix _3d)
Writes tests/oracle/conv_*.safetensors next to this script.
"""
import os

import torch
import torch.nn.functional as F

import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 2024


def out(name):
    return os.path.join(HERE, name)


def conv_case(name, n, ic, h, w, oc, kh, kw, stride, pad, bias, fpad=None):
    """pad: (top, bottom, left, right) handed to the C op; fpad: F.pad argument used by the
    oracle instead of conv padding (asymmetric), pad must then describe the same zeros."""
    x = torch.randn(n, ic, h, w)
    wt = torch.randn(oc, ic, kh, kw) / (ic * kh * kw) ** 0.5
    b = torch.randn(oc) if bias else None
    leaves = [x.double().requires_grad_(True), wt.double().requires_grad_(True)]
    if bias:
        leaves.append(b.double().requires_grad_(True))
    xin = leaves[0]
    if fpad is not None:
        xin = F.pad(xin, fpad)
        conv_pad = 0
    else:
        top, bottom, left, right = pad
        assert top == bottom and left == right
        conv_pad = (top, left)
    y = F.conv2d(xin, leaves[1], leaves[2] if bias else None, stride=stride, padding=conv_pad)
    dy = torch.randn(y.shape)
    grads = torch.autograd.grad(y, leaves, grad_outputs=dy.double())
    t = {"x": x, "w": wt, "y": y.detach().float(), "dy": dy,
         "dx": grads[0].float(), "dw": grads[1].float()}
    if bias:
        t["b"] = b
        t["db"] = grads[2].float()
    t["config"] = torch.tensor([n, ic, h, w, oc, kh, kw, stride[0], stride[1],
                                pad[0], pad[1], pad[2], pad[3], 1 if bias else 0],
                               dtype=torch.int64)
    oracle_util.save(out("conv_%s.safetensors" % name), t, seed=SEED)


def linear_case(t, tag, xshape, out_features, bias):
    x = torch.randn(*xshape)
    wt = torch.randn(out_features, xshape[-1]) / xshape[-1] ** 0.5
    b = torch.randn(out_features) if bias else None
    leaves = [x.double().requires_grad_(True), wt.double().requires_grad_(True)]
    if bias:
        leaves.append(b.double().requires_grad_(True))
    y = F.linear(leaves[0], leaves[1], leaves[2] if bias else None)
    dy = torch.randn(y.shape)
    grads = torch.autograd.grad(y, leaves, grad_outputs=dy.double())
    t["x" + tag], t["w" + tag], t["dy" + tag] = x, wt, dy
    t["y" + tag] = y.detach().float()
    t["dx" + tag], t["dw" + tag] = grads[0].float(), grads[1].float()
    if bias:
        t["b" + tag] = b
        t["db" + tag] = grads[2].float()


def main():
    torch.manual_seed(SEED)
    conv_case("3x3p1", 2, 3, 5, 7, 4, 3, 3, (1, 1), (1, 1, 1, 1), True)
    conv_case("5x5s2", 2, 3, 9, 11, 4, 5, 5, (2, 2), (0, 0, 0, 0), True)
    conv_case("1x1", 2, 5, 4, 6, 3, 1, 1, (1, 1), (0, 0, 0, 0), False)
    conv_case("asym", 2, 3, 5, 7, 4, 3, 3, (1, 1), (0, 1, 1, 2), True, fpad=(1, 2, 0, 1))
    conv_case("s21", 2, 12, 6, 9, 18, 3, 3, (2, 1), (1, 1, 1, 1), True)
    conv_case("1x1s2", 2, 4, 5, 7, 3, 1, 1, (2, 2), (0, 0, 0, 0), True)
    t = {}
    linear_case(t, "_2d", (4, 6), 5, True)
    linear_case(t, "_3d", (2, 3, 6), 5, False)
    oracle_util.save(out("conv_linear.safetensors"), t, seed=SEED)


if __name__ == "__main__":
    main()
