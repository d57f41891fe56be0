"""PyTorch oracle for the shape, pooling, padding, activation and elementwise ops of higan.h
(the shape section of higan.h).

Each case stores the inputs, a random upstream gradient "dy*" (same shape as the output),
the forward output and the autograd gradients of every float input. Odd tiny shapes.
Masked width reductions follow HiGAN+'s StyleEncoder/WriterIdentifier pooling
(networks/module.py of github.com/ganji15/HiGANplus):
    (feat * _len2mask(len, T).unsqueeze(1)).sum(-1) / (len.unsqueeze(1).float() + 1e-8)
Writes tests/oracle/shape_*.safetensors next to this script.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1234


def out(name):
    return os.path.join(HERE, name)


def case(tensors, tag, fn, inputs, names):
    """Run fn(*inputs) with gradients; store y<tag>, dy<tag> and d<name><tag> per input."""
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    y = fn(*leaves)
    dy = torch.randn_like(y)
    gs = torch.autograd.grad(y, leaves, grad_outputs=dy, allow_unused=True)
    tensors["y" + tag] = y.detach()
    tensors["dy" + tag] = dy
    for n, g, x in zip(names, gs, leaves):
        tensors["d" + n + tag] = g if g is not None else torch.zeros_like(x)


def away_from_zero(shape, margin=0.1):
    x = torch.randn(shape)
    return torch.where(x.abs() < margin, x.sign() * margin + x, x)


def len2mask(length, max_len):
    return (torch.arange(max_len, dtype=length.dtype).expand(len(length), max_len)
            < length.unsqueeze(1))


def main():
    torch.manual_seed(SEED)

    # nearest upsampling, (sh, sw) as HiGAN+'s G uses (2,1) and (2,2)
    t = {"x": torch.randn(2, 3, 5, 7)}
    for sh, sw in [(2, 1), (2, 2), (1, 3), (3, 2)]:
        case(t, "_%d%d" % (sh, sw),
             lambda x: F.interpolate(x, scale_factor=(sh, sw), mode="nearest"), [t["x"]], ["x"])
    oracle_util.save(out("shape_upsample.safetensors"), t, seed=SEED)

    # average pool 2 (odd H and W: floor)
    t = {"x": torch.randn(2, 3, 5, 7)}
    case(t, "", nn.AvgPool2d(2), [t["x"]], ["x"])
    oracle_util.save(out("shape_avgpool.safetensors"), t, seed=SEED)

    # max pool 3 stride 2: random values, and coarse values with many ties
    t = {"x": torch.randn(2, 3, 7, 9), "xt": torch.randint(-2, 3, (2, 3, 8, 9)).float() * 0.5}
    case(t, "", nn.MaxPool2d(3, 2), [t["x"]], ["x"])
    case(t, "_ties", nn.MaxPool2d(3, 2), [t["xt"]], ["xt"])
    oracle_util.save(out("shape_maxpool.safetensors"), t, seed=SEED)

    # constant pad: (top, bottom, left, right) in the C API, F.pad takes (l, r, t, b)
    t = {"x": torch.randn(2, 3, 5, 7)}
    pads = [((1, 2, 0, 3), -1.0), ((2, 2, 2, 2), 0.0), ((-1, 1, 2, -2), 0.5), ((0, 0, 1, 1), 0.0)]
    for i, ((tp, bt, lf, rt), v) in enumerate(pads):
        case(t, "_%d" % i, lambda x: F.pad(x, (lf, rt, tp, bt), value=v), [t["x"]], ["x"])
    oracle_util.save(out("shape_pad.safetensors"), t, seed=SEED)

    # activations (inputs away from the kink at 0)
    t = {"x": away_from_zero((2, 3, 5, 7))}
    case(t, "_relu", F.relu, [t["x"]], ["x"])
    case(t, "_leaky", lambda x: F.leaky_relu(x, 0.2), [t["x"]], ["x"])
    case(t, "_leaky01", lambda x: F.leaky_relu(x), [t["x"]], ["x"])  # nn.LeakyReLU() default 0.01
    case(t, "_tanh", torch.tanh, [t["x"]], ["x"])
    case(t, "_exp", torch.exp, [t["x"]], ["x"])
    oracle_util.save(out("shape_act.safetensors"), t, seed=SEED)

    # concat along dims 1, 0, 3 and 2 (3 inputs)
    t = {"a": torch.randn(2, 3, 5, 7), "b": torch.randn(2, 2, 5, 7), "c": torch.randn(1, 3, 5, 7),
         "d": torch.randn(2, 3, 5, 2), "e": torch.randn(2, 3, 1, 7), "f": torch.randn(2, 3, 3, 7)}
    case(t, "_d1", lambda a, b: torch.cat([a, b], 1), [t["a"], t["b"]], ["a", "b"])
    case(t, "_d0", lambda a, c: torch.cat([a, c], 0), [t["a"], t["c"]], ["a", "c"])
    case(t, "_d3", lambda a, d: torch.cat([a, d], 3), [t["a"], t["d"]], ["a", "d"])
    case(t, "_d2", lambda e, a, f: torch.cat([e, a, f], 2), [t["e"], t["a"], t["f"]], ["e", "a", "f"])
    oracle_util.save(out("shape_concat.safetensors"), t, seed=SEED)

    # slices (narrow) and a split in chunks of 2 along dim 1
    t = {"x": torch.randn(3, 5, 3, 4)}
    case(t, "_d1", lambda x: x.narrow(1, 1, 3), [t["x"]], ["x"])
    case(t, "_d0", lambda x: x.narrow(0, 1, 1), [t["x"]], ["x"])
    case(t, "_d3", lambda x: x.narrow(3, 2, 2), [t["x"]], ["x"])
    # split(2, dim=1) -> sizes 2,2,1; weight each chunk so all pieces get distinct gradients
    case(t, "_split", lambda x: torch.cat([p * (i + 1) for i, p in enumerate(x.split(2, dim=1))], 1),
         [t["x"]], ["x"])
    oracle_util.save(out("shape_slice.safetensors"), t, seed=SEED)

    # reshape (view) + permute: HiGAN+'s G does h.view(B, L*4, 4, -1).permute(0, 3, 2, 1)
    t = {"h": torch.randn(2, 3, 4 * 4 * 5), "p3": torch.randn(3, 4, 5), "p4": torch.randn(2, 3, 4, 5),
         "p2": torch.randn(3, 5)}
    case(t, "_g", lambda h: h.view(2, 3 * 4, 4, -1).permute(0, 3, 2, 1), [t["h"]], ["h"])
    case(t, "_102", lambda x: x.permute(1, 0, 2), [t["p3"]], ["p3"])
    case(t, "_021", lambda x: x.permute(0, 2, 1), [t["p3"]], ["p3"])
    case(t, "_2031", lambda x: x.permute(2, 0, 3, 1), [t["p4"]], ["p4"])
    case(t, "_10", lambda x: x.permute(1, 0), [t["p2"]], ["p2"])
    # [B,C,1,T] -> [B,T,C]: squeeze (view) then permute(0,2,1)
    t["q"] = torch.randn(2, 4, 1, 5)
    case(t, "_sq", lambda x: x.squeeze(2).permute(0, 2, 1), [t["q"]], ["q"])
    oracle_util.save(out("shape_permute.safetensors"), t, seed=SEED)

    # masked width sum / mean; lens include 0 and a value > W
    t = {"x3": torch.randn(4, 3, 9), "x4": torch.randn(4, 3, 2, 6),
         "lens3": torch.tensor([9, 4, 0, 12], dtype=torch.int64),
         "lens4": torch.tensor([1, 6, 3, 8], dtype=torch.int64)}
    m3 = len2mask(t["lens3"], 9).unsqueeze(1).float()
    m4 = len2mask(t["lens4"], 6).unsqueeze(1).unsqueeze(1).float()
    case(t, "_sum3", lambda x: (x * m3).sum(-1), [t["x3"]], ["x3"])
    case(t, "_mean3", lambda x: (x * m3).sum(-1) / (t["lens3"].unsqueeze(1).float() + 1e-8),
         [t["x3"]], ["x3"])
    case(t, "_sum4", lambda x: (x * m4).sum((2, 3)), [t["x4"]], ["x4"])
    case(t, "_mean4", lambda x: (x * m4).sum((2, 3)) / (2 * t["lens4"].unsqueeze(1).float() + 1e-8),
         [t["x4"]], ["x4"])
    oracle_util.save(out("shape_masked.safetensors"), t, seed=SEED)

    # log-softmax over the last dim ([T,B,C] as the recognizer feeds CTC) and 2-D
    t = {"x": torch.randn(5, 3, 7) * 3, "x2": torch.randn(4, 11)}
    case(t, "", lambda x: x.log_softmax(-1), [t["x"]], ["x"])
    case(t, "_2", lambda x: x.log_softmax(-1), [t["x2"]], ["x2"])
    oracle_util.save(out("shape_logsoftmax.safetensors"), t, seed=SEED)

    # elementwise helpers
    t = {"a": torch.randn(2, 3, 5, 7), "b": torch.randn(2, 3, 5, 7), "bias": torch.randn(2, 3),
         "v": torch.randn(3, 4)}
    case(t, "_add", lambda a, b: a + b, [t["a"], t["b"]], ["a", "b"])
    case(t, "_sub", lambda a, b: a - b, [t["a"], t["b"]], ["a", "b"])
    case(t, "_mul", lambda a, b: a * b, [t["a"], t["b"]], ["a", "b"])
    case(t, "_scale", lambda a: a * -0.75, [t["a"]], ["a"])
    case(t, "_addnc", lambda a, bias: a + bias[:, :, None, None], [t["a"], t["bias"]], ["a", "bias"])
    t["c3"] = torch.randn(2, 3, 7)
    case(t, "_addnc3", lambda c3, bias: c3 + bias[:, :, None], [t["c3"], t["bias"]], ["c3", "bias"])
    case(t, "_sum", lambda a: a.sum().view(1), [t["a"]], ["a"])
    case(t, "_mean", lambda a: a.mean().view(1), [t["a"]], ["a"])
    oracle_util.save(out("shape_elementwise.safetensors"), t, seed=SEED)


if __name__ == "__main__":
    main()
