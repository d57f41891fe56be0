"""Oracle fixtures for the BigGAN-side networks of HiGAN+ (tests/test_biggan.c).

Writes biggan_generator, biggan_discriminator and biggan_patch .safetensors.
Run from tests/oracle (as `make oracle` does) with /usr/bin/python3 (torch 1.13).

The modules below are a compact rewrite of HiGAN+/networks/BigGAN_layers.py and
BigGAN_networks.py (ganji15/HiGANplus @ 5d37de7) with the same state_dict keys and the same
math (SN_eps 1e-8, BN eps 1e-5 / momentum 0.1, G_attn = D_attn = '0', bn_linear 'SN',
norm_style 'bn', init 'N02'), at reduced widths so the fixtures stay small. Checked once
against the official classes (imported with matplotlib stubbed): the same state_dict keys
in the same order with the same shapes at the official configuration, and bit-identical
outputs, gradients and buffers after a train and an eval step at ch 2; the patch cutter
below gives the official extract_all_patches forward exactly. Two upstream
problems under torch 1.13 are avoided (spec section 10):
  * Embedding(max_norm=1) renormalises in place inside the autograd graph; here the same
    renorm (torch.embedding_renorm_) runs under no_grad before a plain F.embedding lookup.
  * extract_all_patches' masked_select on a permuted view has a wrong CPU backward in
    torch < 2.1 (pytorch#99638); here the windows are cut with unfold and selected with
    boolean indexing, and the result is checked against a brute-force loop.
The networks are built and initialised in float32 (the fixture's weights and inputs), then
run in float64: the references are then free of PyTorch's own float32 rounding, which in
BatchNorm's training-mode backward (differences of large sums) reaches 1e-4 relative, so the
C float32 results can be held to fp32 tolerances.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))
SN_EPS = 1e-8


def out(name):
    return os.path.join(HERE, name)


# ---- layers (BigGAN_layers.py) ------------------------------------------------------------
class SN(object):
    """num_svs = num_itrs = 1: buffers u0 [1, out] ~ N(0, 1) and sv0 [1] = 1."""

    def _sn_init(self, num_outputs):
        self.register_buffer('u0', torch.randn(1, num_outputs))
        self.register_buffer('sv0', torch.ones(1))

    def W_(self):
        W = self.weight.view(self.weight.size(0), -1)
        with torch.no_grad():
            v = F.normalize(torch.matmul(self.u0, W), eps=SN_EPS)
            u = F.normalize(torch.matmul(v, W.t()), eps=SN_EPS)
            if self.training:
                self.u0[:] = u
        sv = torch.squeeze(torch.matmul(torch.matmul(v, W.t()), u.t()))
        if self.training:
            with torch.no_grad():
                self.sv0[:] = sv
        return self.weight / sv


class SNConv2d(nn.Conv2d, SN):
    def __init__(self, cin, cout, kernel_size=3, padding=1, bias=True):
        nn.Conv2d.__init__(self, cin, cout, kernel_size, 1, padding, bias=bias)
        self._sn_init(cout)

    def forward(self, x):
        return F.conv2d(x, self.W_(), self.bias, self.stride, self.padding)


class SNLinear(nn.Linear, SN):
    def __init__(self, fin, fout, bias=True):
        nn.Linear.__init__(self, fin, fout, bias)
        self._sn_init(fout)

    def forward(self, x):
        return F.linear(x, self.W_(), self.bias)


class ccbn(nn.Module):
    def __init__(self, output_size, input_size):
        super().__init__()
        self.gain = SNLinear(input_size, output_size, bias=False)
        self.bias = SNLinear(input_size, output_size, bias=False)
        self.register_buffer('stored_mean', torch.zeros(output_size))
        self.register_buffer('stored_var', torch.ones(output_size))

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None,
                           self.training, 0.1, 1e-5)
        return out * gain + bias


class bn(nn.Module):
    def __init__(self, output_size):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(output_size))
        self.bias = nn.Parameter(torch.zeros(output_size))
        self.register_buffer('stored_mean', torch.zeros(output_size))
        self.register_buffer('stored_var', torch.ones(output_size))

    def forward(self, x):
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias,
                            self.training, 0.1, 1e-5)


class GBlock(nn.Module):
    def __init__(self, cin, cout, y_dim, upsample):
        super().__init__()
        self.conv1 = SNConv2d(cin, cout)
        self.conv2 = SNConv2d(cout, cout)
        self.learnable_sc = cin != cout or upsample is not None
        if self.learnable_sc:
            self.conv_sc = SNConv2d(cin, cout, kernel_size=1, padding=0)
        self.bn1 = ccbn(cin, y_dim)
        self.bn2 = ccbn(cout, y_dim)
        self.upsample = upsample

    def forward(self, x, y):
        h = F.relu(self.bn1(x, y))
        if self.upsample:
            h = F.interpolate(h, scale_factor=self.upsample)
            x = F.interpolate(x, scale_factor=self.upsample)
        h = self.conv1(h)
        h = F.relu(self.bn2(h, y))
        h = self.conv2(h)
        if self.learnable_sc:
            x = self.conv_sc(x)
        return h + x


class DBlock(nn.Module):
    def __init__(self, cin, cout, preactivation, downsample):
        super().__init__()
        self.conv1 = SNConv2d(cin, cout)
        self.conv2 = SNConv2d(cout, cout)
        self.preactivation = preactivation
        self.downsample = nn.AvgPool2d(2) if downsample else None
        self.learnable_sc = cin != cout or downsample
        if self.learnable_sc:
            self.conv_sc = SNConv2d(cin, cout, kernel_size=1, padding=0)

    def shortcut(self, x):
        if self.preactivation:
            if self.learnable_sc:
                x = self.conv_sc(x)
            if self.downsample:
                x = self.downsample(x)
        else:
            if self.downsample:
                x = self.downsample(x)
            if self.learnable_sc:
                x = self.conv_sc(x)
        return x

    def forward(self, x):
        h = F.relu(x) if self.preactivation else x
        h = self.conv1(h)
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = self.downsample(h)
        return h + self.shortcut(x)


def len2mask(length, max_len):
    return (torch.arange(max_len).expand(len(length), max_len) < length.unsqueeze(1)).float()


def init_n02(net):
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight.data, 0.0, 0.02)


# ---- networks (BigGAN_networks.py) -----------------------------------------------------------
class Generator(nn.Module):
    def __init__(self, ch=64, style_dim=32, embed_dim=120, n_class=80, bottom=4, input_nc=1):
        super().__init__()
        self.style_dim, self.bottom = style_dim, bottom
        in_ch = [ch * k for k in (8, 4, 2, 1)]
        out_ch = [ch * k for k in (4, 2, 1, 1)]
        ups = [(2, 1), (2, 2), (2, 2), (2, 2)]
        self.text_embedding = nn.Embedding(n_class, embed_dim, padding_idx=0)   # max_norm below
        self.filter_linear = SNLinear(style_dim + embed_dim, in_ch[0] * bottom * bottom)
        self.style_linear = SNLinear(style_dim, style_dim * 4)
        self.blocks = nn.ModuleList([nn.ModuleList([GBlock(in_ch[i], out_ch[i], style_dim, ups[i])])
                                     for i in range(4)])
        self.output_layer = nn.Sequential(bn(out_ch[-1]), nn.ReLU(inplace=False),
                                          SNConv2d(out_ch[-1], input_nc))
        init_n02(self)

    def forward(self, z, y, y_lens):
        ys = self.style_linear(z).split(self.style_dim, dim=1)
        with torch.no_grad():   # Embedding(max_norm=1.0), autograd-safe
            torch.embedding_renorm_(self.text_embedding.weight, y.contiguous().view(-1), 1.0, 2.0)
        e = F.embedding(y, self.text_embedding.weight, padding_idx=0)
        z = torch.cat((z.unsqueeze(1).repeat(1, e.shape[1], 1), e), 2)
        h = self.filter_linear(z)
        h = h.view(h.size(0), h.shape[1] * self.bottom, self.bottom, -1)
        h = h.permute(0, 3, 2, 1)
        for index, blocklist in enumerate(self.blocks):
            for block in blocklist:
                h = block(h, ys[index])
        output = torch.tanh(self.output_layer(h))
        if not self.training:
            out_lens = y_lens * output.size(-2) // 2
            mask = len2mask(out_lens.int(), output.size(-1)).unsqueeze(1).unsqueeze(1)
            output = output * mask + (mask - 1)
        return output


class Discriminator(nn.Module):
    def __init__(self, ch=64, input_nc=1):
        super().__init__()
        in_ch = [input_nc] + [ch * k for k in (1, 2, 4)]
        out_ch = [ch * k for k in (1, 2, 4, 4)]
        down = [True, True, True, False]
        self.blocks = nn.ModuleList([nn.ModuleList([DBlock(in_ch[i], out_ch[i], i > 0, down[i])])
                                     for i in range(4)])
        self.linear = SNLinear(out_ch[-1], 1)
        init_n02(self)

    def forward(self, x, x_lens=None, y_lens=None):
        h = x
        for blocklist in self.blocks:
            for block in blocklist:
                h = block(h)
        if x_lens is None:
            h = torch.sum(F.relu(h), [2, 3])
        else:
            h = F.relu(h)
            h_lens = x_lens * h.size(-1) // (x.size(-1) + 1e-8)
            mask = len2mask(h_lens.int(), h.size(-1))
            mask = mask.view(mask.size(0), 1, 1, mask.size(1))
            h = torch.sum(h * mask, [2, 3])
            h = h / y_lens.unsqueeze(dim=-1)
        return self.linear(h)


# ---- extract_all_patches (networks/utils.py), autograd-correct ------------------------------
def extract_all_patches(imgs, lens, block=32, step=8):
    B, C, H, W = imgs.shape
    rows = (H - block) // step + 1
    p = imgs.unfold(2, block, step)                    # B, C, rows, W, block
    if (H - block) % step != 0:
        raise ValueError('H - block must be a multiple of step')
    p = p.unfold(3, block, step)                       # B, C, rows, cols, block, block
    # upstream appends the last window when (W - block) % step != 0; lens <= W never
    # selects it, so the windows unfold gives are all that can be selected
    patch_lens = torch.div(lens - block, step, rounding_mode='floor') + 1
    mask = len2mask(patch_lens, p.size(3)).bool()      # B, cols
    p = p.permute(0, 2, 3, 1, 4, 5)                    # B, rows, cols, C, block, block
    sel = mask.unsqueeze(1).expand(B, rows, p.size(2))
    return p[sel].reshape(-1, C, block, block)


def brute_patches(imgs, lens, block=32, step=8):
    B, C, H, W = imgs.shape
    res = []
    for b in range(B):
        ncol = max(0, (int(lens[b]) - block) // step + 1)
        for r in range((H - block) // step + 1):
            for c in range(ncol):
                res.append(imgs[b, :, r * step:r * step + block, c * step:c * step + block])
    return torch.stack(res)


# ---- fixture helpers -------------------------------------------------------------------------
def state(net, prefix):
    return {prefix + k: v.detach().clone() for k, v in net.state_dict().items()}


def randomise_stats(net):
    """Non-trivial stored BN statistics and output-BN affine parameters (init gives 0/1)."""
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.endswith('stored_mean'):
                b.copy_(torch.randn_like(b) * 0.2)
            elif name.endswith('stored_var'):
                b.copy_(torch.rand_like(b) + 0.5)
        for name, p in net.named_parameters():
            if name.startswith('output_layer.0.'):
                p.add_(torch.randn_like(p) * 0.3)


def run(net, tag, T, fwd, inputs, r, train):
    """One forward/backward of sum(out * r) from the current state (float64); records
    the output, input and parameter gradients and the buffers after the step."""
    net.train(train)
    net.zero_grad(set_to_none=True)
    o = fwd()
    (o * r).sum().backward()
    T[tag + '.out'] = o
    for name, x in inputs.items():
        T[tag + '.d' + name] = x.grad
        x.grad = None
    for k, p in net.named_parameters():
        T[tag + '.grad.' + k] = p.grad if p.grad is not None else torch.zeros_like(p)
    params = dict(net.named_parameters())
    for k, v in net.state_dict().items():      # buffers (and renormalised embedding) after
        if k not in params or k.endswith('text_embedding.weight'):
            T[tag + '.after.' + k] = v.detach().clone()


def seed_r(*shape):
    """The backward seed r (loss = sum(out * r)); test_biggan.c computes the same floats."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 37) % 101) - 50).to(torch.float32).div(50.0).view(*shape)


def make_generator():
    seed = 11
    torch.manual_seed(seed)
    cfg = dict(ch=2, style_dim=32, embed_dim=8, n_class=80, bottom=4, input_nc=1)
    G = Generator(**cfg)
    randomise_stats(G)
    with torch.no_grad():   # rows 5 and 7 above max_norm 1 so the renorm is exercised
        G.text_embedding.weight[5] *= 60.0
        G.text_embedding.weight[7] *= 80.0
    B, L = 3, 4
    lens = torch.tensor([4, 2, 3])
    labels = torch.tensor([[5, 12, 7, 5], [33, 5, 0, 0], [7, 60, 1, 0]])
    z0 = torch.randn(B, cfg['style_dim'])
    T = state(G, 'Generator.')
    init = {k: v.clone() for k, v in G.state_dict().items()}
    T['z'] = z0
    T['labels'] = labels.to(torch.int32)
    T['lens'] = lens.to(torch.int32)
    r = seed_r(B, cfg['input_nc'], 16 * cfg['bottom'], 8 * cfg['bottom'] * L).double()
    G.double()
    for tag, train in (('train', True), ('eval', False)):
        G.load_state_dict(init)
        z = z0.double().requires_grad_(True)
        run(G, tag, T, lambda: G(z, labels, lens), {'z': z}, r, train)
    oracle_util.save(out('biggan_generator.safetensors'), T, seed=seed,
                     **{k: v for k, v in cfg.items()})


def make_discriminator():
    seed = 12
    torch.manual_seed(seed)
    D = Discriminator(ch=2)
    B, H, W = 3, 64, 96
    x_lens = torch.tensor([96, 40, 70])
    y_lens = torch.tensor([3, 1, 2])
    x0 = torch.randn(B, 1, H, W)
    T = state(D, 'Discriminator.')
    init = {k: v.clone() for k, v in D.state_dict().items()}
    T['x'] = x0
    T['x_lens'] = x_lens.to(torch.int32)
    T['y_lens'] = y_lens.to(torch.int32)
    r = seed_r(B, 1).double()
    D.double()
    for tag, train in (('train', True), ('eval', False)):
        D.load_state_dict(init)
        x = x0.double().requires_grad_(True)
        run(D, tag, T, lambda: D(x, x_lens, y_lens), {'x': x}, r, train)
    oracle_util.save(out('biggan_discriminator.safetensors'), T, seed=seed, ch=2)


def make_patch():
    seed = 13
    torch.manual_seed(seed)
    P = Discriminator(ch=2)       # PatchDiscriminator: same class, resolution 32
    B, H, W = 2, 64, 76           # W - 32 not a multiple of 8: upstream's extra column
    lens = torch.tensor([76, 45])
    x0 = torch.randn(B, 1, H, W)
    # the autograd-safe extractor agrees with a brute-force loop, values and gradients
    xa = x0.clone().requires_grad_(True)
    xb = x0.clone().requires_grad_(True)
    pa, pb = extract_all_patches(xa, lens), brute_patches(xb, lens)
    assert torch.equal(pa, pb)
    g = torch.randn(pa.shape)
    (pa * g).sum().backward()
    (pb * g).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6)
    T = state(P, 'PatchDiscriminator.')
    init = {k: v.clone() for k, v in P.state_dict().items()}
    T['x'] = x0
    T['lens'] = lens.to(torch.int32)
    r = seed_r(pa.shape[0], 1).double()
    P.double()
    for tag, train in (('train', True), ('eval', False)):
        P.load_state_dict(init)
        x = x0.double().requires_grad_(True)
        run(P, tag, T, lambda: P(extract_all_patches(x, lens)),
            {'x': x}, r, train)
    oracle_util.save(out('biggan_patch.safetensors'), T, seed=seed, ch=2)


if __name__ == '__main__':
    make_generator()
    make_discriminator()
    make_patch()
