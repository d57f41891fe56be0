"""PyTorch oracle for the style and recognition networks of higan.h (the styler section of higan.h):
StyleBackbone, StyleEncoder (VAE mode), WriterIdentifier and Recognizer, rebuilt here with
the module structure of the official HiGAN+ code (networks/module.py, networks/block.py) so
that the state_dict keys are the official ones. Small widths (resolution 2, max_dim 32: the
same code path and key set as the official 16/256), random weights and random BN running
statistics, a batch of 3 images 64 px high with widths 96, 64, 32 (padded to 96 with -1).

Writes tests/oracle/styler_backbone.safetensors and styler_recognizer.safetensors:
    params.<official key>   initial parameters and buffers (load with prefix "params.")
    train.*                 train-mode outputs, gradients of L = sum_k sum(out_k * r_k)
                            (r.* are the weights), BN running stats after the step
    eval.*                  eval-mode outputs (with the updated running stats), input gradient

    /usr/bin/python3 tests/oracle/make_styler.py
"""
import os

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from oracle_util import save

HERE = os.path.dirname(os.path.abspath(__file__))
RES, MAX_DIM = 2, 32          # official: 16, 256
STYLE_DIM, N_WRITER = 8, 5    # official: 32, 372
LENS = [96, 64, 32]           # descending, as pack_padded_sequence wants
W = 96


# ---- networks/block.py (the parts HiGAN+ uses) -------------------------------------------
class Identity(nn.Module):
    def forward(self, x):
        return x


class Conv2dBlock(nn.Module):
    def __init__(self, in_dim, out_dim, ks, st, padding=0, norm='none', activation='relu',
                 use_bias=True, activation_first=False):
        super().__init__()
        self.activation_first = activation_first
        self.pad = nn.ZeroPad2d(padding) if padding else Identity()
        self.norm = nn.BatchNorm2d(out_dim) if norm == 'bn' else None
        self.activation = nn.ReLU() if activation == 'relu' else None
        self.conv = nn.Conv2d(in_dim, out_dim, ks, st, bias=use_bias)

    def forward(self, x):
        if self.activation_first:
            if self.activation:
                x = self.activation(x)
            x = self.conv(self.pad(x))
            if self.norm:
                x = self.norm(x)
        else:
            x = self.conv(self.pad(x))
            if self.norm:
                x = self.norm(x)
            if self.activation:
                x = self.activation(x)
        return x


class ActFirstResBlock(nn.Module):
    def __init__(self, fin, fout, dropout=0.):
        super().__init__()
        self.learned_shortcut = fin != fout
        fhid = min(fin, fout)
        self.conv_0 = Conv2dBlock(fin, fhid, 3, 1, padding=1, norm='bn', activation='relu',
                                  activation_first=True)
        self.conv_1 = Conv2dBlock(fhid, fout, 3, 1, padding=1, norm='bn', activation='relu',
                                  activation_first=True)
        if self.learned_shortcut:
            self.conv_s = Conv2dBlock(fin, fout, 1, 1, activation='none', use_bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else Identity()

    def forward(self, x):
        x_s = self.conv_s(x) if self.learned_shortcut else x
        dx = self.conv_1(self.dropout(self.conv_0(x)))
        return x_s + dx


class DeepBLSTM(nn.Module):
    def __init__(self, input_size, hidden_size, n_layers):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size // 2, n_layers, bidirectional=True,
                            batch_first=True)

    def forward(self, x, x_len):
        x_pack = pack_padded_sequence(x, x_len, batch_first=True)   # enforce_sorted, as upstream
        out_pack, _ = self.lstm(x_pack)
        out, _ = pad_packed_sequence(out_pack, batch_first=True)    # T = max length
        return out


# ---- networks/module.py --------------------------------------------------------------------
def cnn_layers(nf, max_dim, in_channel=1, dropout=0.):
    cnn_f = [nn.ConstantPad2d(2, -1), Conv2dBlock(in_channel, nf, 5, 2, 0, norm='none',
                                                  activation='none')]
    for _ in range(2):
        nf_out = min(nf * 2, max_dim)
        cnn_f += [ActFirstResBlock(nf, nf, dropout / 2), nn.ZeroPad2d((1, 1, 0, 0)),
                  ActFirstResBlock(nf, nf_out, dropout / 2), nn.ZeroPad2d(1),
                  nn.MaxPool2d(kernel_size=3, stride=2)]
        nf = min(nf_out, max_dim)
    df = nf
    for i in range(2):
        df_out = min(df * 2, max_dim)
        cnn_f += [ActFirstResBlock(df, df, dropout), ActFirstResBlock(df, df_out, dropout)]
        cnn_f += [nn.MaxPool2d(kernel_size=3, stride=2)] if i < 1 else [nn.ZeroPad2d((1, 1, 0, 0))]
        df = min(df_out, max_dim)
    cnn_ctc = nn.Sequential(nn.ReLU(), Conv2dBlock(df, df, 3, 1, 0, norm='bn', activation='relu'))
    return nn.Sequential(*cnn_f), cnn_ctc, df


class StyleBackbone(nn.Module):
    def __init__(self, resolution, max_dim):
        super().__init__()
        self.cnn_backbone, self.cnn_ctc, self.out_dim = cnn_layers(resolution, max_dim)

    def forward(self, x):
        feats = []
        for name, layer in self.cnn_backbone._modules.items():
            x = layer(x)
            if name in ('9', '13', '16'):
                feats.append(x)
        return self.cnn_ctc(x).squeeze(-2), feats


def _len2mask(length, max_len):
    return (torch.arange(max_len).expand(len(length), max_len) < length.unsqueeze(1)).float()


def masked_mean(feat, img_len, scale):
    img_len = img_len // scale
    mask = _len2mask(img_len, feat.size(-1)).unsqueeze(1)
    return (feat * mask).sum(dim=-1) / (img_len.unsqueeze(1).float() + 1e-8)


class StyleEncoder(nn.Module):
    def __init__(self, style_dim, in_dim):
        super().__init__()
        self.linear_style = nn.Sequential(nn.Linear(in_dim, in_dim), nn.LeakyReLU(),
                                          nn.Linear(in_dim, in_dim), nn.LeakyReLU())
        self.mu = nn.Linear(in_dim, style_dim)
        self.logvar = nn.Linear(in_dim, style_dim)

    def forward(self, feat, img_len, eps=None):
        style = self.linear_style(masked_mean(feat, img_len, 16))
        mu, logvar = self.mu(style), self.logvar(style)
        z = eps * torch.exp(0.5 * logvar) + mu if eps is not None else mu   # reparameterize
        return z, mu, logvar


class WriterIdentifier(nn.Module):
    def __init__(self, n_writer, in_dim):
        super().__init__()
        self.linear_wid = nn.Sequential(nn.Linear(in_dim, in_dim), nn.LeakyReLU(),
                                        nn.Linear(in_dim, n_writer))

    def forward(self, feat, img_len):
        return self.linear_wid(masked_mean(feat, img_len, 32))      # the len // 32 quirk


class Recognizer(nn.Module):
    def __init__(self, n_class, resolution, max_dim, rnn_depth=2):
        super().__init__()
        self.cnn_backbone, self.cnn_ctc, df = cnn_layers(resolution, max_dim)
        self.rnn_ctc = DeepBLSTM(df, df, rnn_depth)
        self.ctc_cls = nn.Linear(df, n_class)

    def forward(self, x, x_len):
        ctc_feat = self.cnn_ctc(self.cnn_backbone(x)).squeeze(-2).transpose(1, 2)
        ctc_len = x_len // (16 + 1e-8)               # as upstream (float, == x_len // 16 here)
        logits = self.ctc_cls(self.rnn_ctc(ctc_feat, ctc_len.cpu()))
        if self.training:
            logits = logits.transpose(0, 1).log_softmax(2)
        return logits


# ---- helpers ------------------------------------------------------------------------------
def randomize(module):
    """Random weights (N(0, 0.3) for conv/linear so activations stay O(1) at these widths),
    random BN affine and running statistics, num_batches_tracked 3."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith('norm.weight'):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith('norm.bias'):
                p.copy_(0.1 * torch.randn_like(p))
            elif 'lstm' in name:
                p.uniform_(-0.4, 0.4)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.normal_(0.0, (1.5 / fan_in) ** 0.5 if p.dim() > 1 else 0.1)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(3)


def state(prefix, module):
    return {prefix + k: v.detach().clone() for k, v in module.state_dict().items()}


def images(seed):
    torch.manual_seed(seed)
    x = torch.rand(len(LENS), 1, 64, W) * 2.0 - 1.0
    for b, n in enumerate(LENS):
        x[b, :, :, n:] = -1.0
    return x


def running_stats(prefix, module):
    return {prefix + k: v.detach().clone() for k, v in module.state_dict().items()
            if 'running' in k or 'num_batches' in k}


def make_backbone():
    torch.manual_seed(11)
    B = StyleBackbone(RES, MAX_DIM)
    E = StyleEncoder(STYLE_DIM, B.out_dim)
    Wid = WriterIdentifier(N_WRITER, B.out_dim)
    for m in (B, E, Wid):
        randomize(m)
    d = {}
    d.update(state('params.StyleBackbone.', B))
    d.update(state('params.StyleEncoder.', E))
    d.update(state('params.WriterIdentifier.', Wid))
    x = images(12)
    lens = torch.tensor(LENS, dtype=torch.int64)
    d['x'] = x
    d['img_lens'] = lens

    # train step (BN batch statistics, running stats updated), VAE mode with given noise
    torch.manual_seed(13)
    eps = torch.randn(len(LENS), STYLE_DIM)
    for m in (B, E, Wid):
        m.train()
    xg = x.clone().requires_grad_()
    seq, feats = B(xg)
    z, mu, logvar = E(seq, lens, eps)
    wid = Wid(seq, lens)
    outs = {'feat2': feats[0], 'feat3': feats[1], 'feat4': feats[2], 'seq': seq, 'z': z, 'mu': mu,
            'logvar': logvar, 'wid': wid}
    torch.manual_seed(14)
    r = {k: torch.randn_like(v) for k, v in outs.items()}
    loss = sum((v * r[k]).sum() for k, v in outs.items())
    loss.backward()
    d['noise'] = eps
    for k, v in outs.items():
        d['train.' + k] = v
        d['r.' + k] = r[k]
    d['train.dx'] = xg.grad
    for prefix, m in (('StyleBackbone.', B), ('StyleEncoder.', E), ('WriterIdentifier.', Wid)):
        for k, p in m.named_parameters():
            d['train.grad.' + prefix + k] = p.grad.clone()
    d.update(running_stats('train.after.StyleBackbone.', B))

    # eval with the updated running stats: sequence feature, mu (no VAE), WID logits
    for m in (B, E, Wid):
        m.eval()
    xg = x.clone().requires_grad_()
    seq, feats = B(xg)
    z, mu, logvar = E(seq, lens)
    wid = Wid(seq, lens)
    outs = {'feat4': feats[2], 'seq': seq, 'mu': mu, 'wid': wid}
    loss = sum((v * r[k]).sum() for k, v in outs.items())
    loss.backward()
    for k, v in outs.items():
        d['eval.' + k] = v
    d['eval.dx'] = xg.grad
    save(os.path.join(HERE, 'styler_backbone.safetensors'), d, seed='11,12,13,14',
         resolution=RES, max_dim=MAX_DIM, style_dim=STYLE_DIM, n_writer=N_WRITER)


def make_recognizer():
    torch.manual_seed(21)
    R = Recognizer(80, RES, MAX_DIM)
    randomize(R)
    d = state('params.Recognizer.', R)
    x = images(22)
    lens = torch.tensor(LENS, dtype=torch.int64)
    d['x'] = x
    d['img_lens'] = lens

    R.train()
    xg = x.clone().requires_grad_()
    lp = R(xg, lens)                                 # [T, B, 80] log-probs
    torch.manual_seed(23)
    r = torch.randn_like(lp)
    (lp * r).sum().backward()
    d['train.log_probs'] = lp
    d['r.log_probs'] = r
    d['train.dx'] = xg.grad
    for k, p in R.named_parameters():
        d['train.grad.Recognizer.' + k] = p.grad.clone()
    d.update(running_stats('train.after.Recognizer.', R))

    R.eval()
    xg = x.clone().requires_grad_()
    logits = R(xg, lens)                             # [B, T, 80] logits
    r2 = r.transpose(0, 1).contiguous()
    (logits * r2).sum().backward()
    d['eval.logits'] = logits
    d['eval.dx'] = xg.grad
    # greedy decoding of the eval logits (argmax, collapse repeats, drop blanks)
    decoded = torch.full((len(LENS), logits.size(1)), -1, dtype=torch.int64)
    for b in range(len(LENS)):
        best = logits[b, :LENS[b] // 16].argmax(-1).tolist()
        out, prev = [], -1
        for c in best:
            if c != prev and c != 0:
                out.append(c)
            prev = c
        decoded[b, :len(out)] = torch.tensor(out, dtype=torch.int64)
    d['eval.decoded'] = decoded
    # shorter lengths: the output has max(len // 16) = 4 frames (pad_packed_sequence)
    with torch.no_grad():
        short = torch.tensor([64, 64, 32], dtype=torch.int64)
        d['eval.short_lens'] = short
        d['eval.short_logits'] = R(x, short)
    save(os.path.join(HERE, 'styler_recognizer.safetensors'), d, seed='21,22,23',
         resolution=RES, max_dim=MAX_DIM)


if __name__ == '__main__':
    make_backbone()
    make_recognizer()
