"""Oracle for the gan section of higan.h (tests/test_gan.c): ONE iteration of HiGAN+'s GAN training, i.e.
one D step and one G step of GlobalLocalAdversarialModel.train (networks/model.py of
ganji15/HiGANplus @ 5d37de7, iter_count 0 so the G step runs), at a tiny configuration.

The seven networks come from make_biggan.py (Generator, Discriminator = PatchDiscriminator,
extract_all_patches) and make_styler.py (StyleBackbone, StyleEncoder, WriterIdentifier,
Recognizer), which reproduce the official modules with the official state_dict keys; the
losses from make_loss.py (recn_l1_loss, KLloss, CXLoss). The training step below follows
model.py line by line; the random draws (z, the VAE noise, the random words) are inputs of
the fixture so that the C port can use the very same values. Two upstream problems under
torch 1.13 are avoided, as spec section 10 asks (the oracle is correct, not bug-compatible):
  * Embedding(max_norm=1) renormalises inside the graph: make_biggan's Generator does the
    same renorm under no_grad before a plain lookup (rows of every call are renormalised in
    place before that call's lookup, exactly like the upstream forward).
  * masked_select on a permuted view has a wrong CPU backward: make_biggan's patch cutter
    uses unfold + boolean indexing.

Tiny configuration (the same in test_gan.c and in the fixture's metadata):
  Generator ch 2, style_dim 8, embed_dim 8, bottom 4; Discriminator / PatchDiscriminator ch 2;
  StyleBackbone and the Recognizer's CNN resolution 2, max_dim 32 (output 32); StyleEncoder
  32 -> 8; WriterIdentifier 32 -> 5 writers; Recognizer BiLSTM 2 layers, 80 classes.
  Batch of 3 real words of 3, 2, 2 characters (64 x 96, style widths 96, 64, 64), augmented
  images 64 x 128 (widths 128, 96, 64), writer ids 0, 3, 1.
Weights are float32 (saved as such); both steps run in float64 from them, so the references
are free of PyTorch's own float32 rounding. The Adam steps (lr 2e-4, betas (0.5, 0.999)) run
on the float64 copies. D's and PatchD's output biases are shifted (+3.4, +17.2) so that the
hinge terms are active on a mix of samples (at N02 init every fake scores below -1), with every
score at least 2e-4 from a kink.
The same iteration is also run in float32 and its distance from the float64 run is stored
(dev.*): a few results hinge on near-ties (max-pool windows and ReLU inputs of the frozen
backbone on the generated images, where float32 and float64 pick different sides), e.g. the
std of d info / d fake is 5e-4 apart and G's gradients 1e-3; the C test allows 3x that.

Writes tests/oracle/gan_step.safetensors:
  <Network>.<key>          the initial state of all seven networks (buffers included) with
                           higan.config.<Network> metadata, loadable by higan_model_load
  in.*                     real batch and the injected draws of both steps (in.d.*, in.g.*)
  d.<loss>                 D-step losses; d.grad.<param> D and P gradients; d.after.<name>
                           every buffer and the embedding after the D step; d.param.<name>
                           D and P after Adam
  g.<loss>, g.gp_*, g.std_* G-step losses, balancing factors and the std of each probe
                           gradient; g.grad.<param> G and E gradients; g.after.<name>
                           buffers after the G step; g.param.<name> G and E after Adam
  dev.<name>               |float32 run - float64 run| (relative) of each scalar, and of
                           the gradient groups (dev.d.grad, dev.g.grad)

    cd tests/oracle && /usr/bin/python3 make_gan.py
"""
import os

import torch
import torch.nn.functional as F

import make_biggan
import make_loss
import make_styler
import oracle_util

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 5150
STYLE_DIM, EMBED_DIM, G_CH, D_CH = 8, 8, 2, 2
RES, MAX_DIM, N_WRITER = 2, 32, 5
CHAR_W, LEN_SCALE = 32, 16
LR, BETAS = 2e-4, (0.5, 0.999)
LAMBDA_CTX, LAMBDA_KL = 2.0, 1e-4
DT = [torch.float64]     # the dtype the steps run in


class Generator(make_biggan.Generator):
    """make_biggan's Generator, callable several times in one graph: torch 1.13's embedding
    node saves the weight, which the next call's in-place renorm would change, so the
    lookup reads a clone taken right after this call's renorm (same values, same gradient:
    the clone passes it through, the padding row gets none)."""

    def forward(self, z, y, y_lens):
        ys = self.style_linear(z).split(self.style_dim, dim=1)
        with torch.no_grad():
            torch.embedding_renorm_(self.text_embedding.weight, y.contiguous().view(-1), 1.0, 2.0)
        e = F.embedding(y, self.text_embedding.weight.clone(), padding_idx=0)
        z = torch.cat((z.unsqueeze(1).repeat(1, e.shape[1], 1), e), 2)
        h = self.filter_linear(z)
        h = h.view(h.size(0), h.shape[1] * self.bottom, self.bottom, -1)
        h = h.permute(0, 3, 2, 1)
        for index, blocklist in enumerate(self.blocks):
            for block in blocklist:
                h = block(h, ys[index])
        assert self.training
        return torch.tanh(self.output_layer(h))


def build():
    torch.manual_seed(SEED)
    G = Generator(ch=G_CH, style_dim=STYLE_DIM, embed_dim=EMBED_DIM, n_class=80,
                              bottom=4, input_nc=1)
    with torch.no_grad():   # rows above max_norm 1, looked up by both steps: the renorm runs
        for r in (30, 41, 5):
            G.text_embedding.weight[r] *= 80.0
    D = make_biggan.Discriminator(ch=D_CH)
    P = make_biggan.Discriminator(ch=D_CH)
    with torch.no_grad():   # scores around the hinges (else relu(1 + D(fake)) is 0 throughout)
        D.linear.bias += 3.4
        P.linear.bias += 17.2
    B = make_styler.StyleBackbone(RES, MAX_DIM)
    E = make_styler.StyleEncoder(STYLE_DIM, B.out_dim)
    W = make_styler.WriterIdentifier(N_WRITER, B.out_dim)
    R = make_styler.Recognizer(80, RES, MAX_DIM)
    make_styler.randomize(B)        # pretrained-like: random weights and BN statistics
    make_styler.randomize(R)
    return dict(Generator=G, StyleEncoder=E, StyleBackbone=B, Discriminator=D,
                PatchDiscriminator=P, WriterIdentifier=W, Recognizer=R)


def meta():
    c = 'resolution=%d max_dim=%d in_channel=1' % (RES, MAX_DIM)
    return {
        'higan.config.Generator': 'ch=%d style_dim=%d embed_dim=%d n_class=80 bottom=4 input_nc=1'
                                  % (G_CH, STYLE_DIM, EMBED_DIM),
        'higan.config.StyleEncoder': 'style_dim=%d in_dim=%d' % (STYLE_DIM, MAX_DIM),
        'higan.config.StyleBackbone': c + ' dropout=0',
        'higan.config.Discriminator': 'ch=%d resolution=64 input_nc=1' % D_CH,
        'higan.config.PatchDiscriminator': 'ch=%d resolution=32 input_nc=1' % D_CH,
        'higan.config.WriterIdentifier': 'n_writer=%d in_dim=%d' % (N_WRITER, MAX_DIM),
        'higan.config.Recognizer': c + ' n_class=80 rnn_depth=2 dropout=0',
    }


def images(B, H, W, lens):
    x = torch.tanh(torch.randn(B, 1, H, W) * 1.5)
    for b, n in enumerate(lens):
        x[b, :, :, n:] = -1.0
    return x


def labels(lens, L):
    y = torch.zeros(len(lens), L, dtype=torch.int64)
    for b, n in enumerate(lens):
        y[b, :n] = torch.randint(2, 80, (n,))
    return y


def inputs():
    torch.manual_seed(SEED + 1)
    lb_lens = torch.tensor([3, 2, 2])
    L = 3
    T = {}
    T['real'] = images(3, 64, CHAR_W * L, (lb_lens * CHAR_W).tolist())
    T['real_lens'] = lb_lens * CHAR_W
    T['labels'] = labels(lb_lens.tolist(), L)
    T['labels'][0, 0] = 30      # one of the over-long embedding rows
    T['label_lens'] = lb_lens
    aug_lens = torch.tensor([128, 96, 64])
    T['aug'] = images(3, 64, 128, aug_lens.tolist())
    T['aug_lens'] = aug_lens
    T['wids'] = torch.tensor([0, 3, 1])
    for tag, lens in (('d', [3, 2, 1]), ('g', [3, 3, 2])):   # sorted, as idx_to_words(sort=True)
        fl = torch.tensor(lens)
        T[tag + '.fake_labels'] = labels(lens, L)
        T[tag + '.fake_labels'][0, 0] = 41 if tag == 'd' else 5
        T[tag + '.fake_lens'] = fl
        T[tag + '.z'] = torch.randn(3, STYLE_DIM)
        T[tag + '.eps'] = torch.randn(3, STYLE_DIM)
    return T


def set_requires_grad(nets, flag):
    for n in nets:
        for p in n.parameters():
            p.requires_grad_(flag)


def d_step(N, I, opt_d, rec):
    G, D, P, E, B = N['Generator'], N['Discriminator'], N['PatchDiscriminator'], N['StyleEncoder'], N['StyleBackbone']
    for n in N.values():
        n.train()                                       # self.set_mode('train')
    real, real_lens = I['real'].to(DT[0]), I['real_lens']
    aug, aug_lens = I['aug'].to(DT[0]), I['aug_lens']
    real_lbs, real_lb_lens = I['labels'], I['label_lens']
    opt_d.zero_grad()
    set_requires_grad([G, E, N['Recognizer'], N['WriterIdentifier'], B], False)
    set_requires_grad([D, P], True)
    with torch.no_grad():
        fake_lbs, fake_lb_lens = I['d.fake_labels'], I['d.fake_lens']
        z = I['d.z'].to(DT[0])
        fake_imgs = G(z, fake_lbs, fake_lb_lens)
        feat, _ = B(real)
        enc_z, _, _ = E(feat, real_lens, I['d.eps'].to(DT[0]))       # vae_mode=True
        style_imgs = G(enc_z, fake_lbs, fake_lb_lens)
        recn_imgs = G(enc_z, real_lbs, real_lb_lens)
        cat_fake_imgs = torch.cat([fake_imgs, style_imgs, recn_imgs], dim=0)
        cat_fake_lb_lens = torch.cat([fake_lb_lens, fake_lb_lens, real_lb_lens], dim=0)
        cat_fake_img_lens = cat_fake_lb_lens * CHAR_W
    fake_disc = D(cat_fake_imgs.detach(), cat_fake_img_lens, cat_fake_lb_lens)
    fake_disc_loss = torch.mean(F.relu(1.0 + fake_disc))
    fake_img_patches = make_biggan.extract_all_patches(cat_fake_imgs, cat_fake_img_lens)
    fake_disc_patches = P(fake_img_patches.detach())
    fake_disc_loss_patch = torch.mean(F.relu(1.0 + fake_disc_patches))
    real_disc = D(real, real_lens, real_lb_lens)
    real_disc_aug = D(aug, aug_lens, real_lb_lens)
    real_disc_loss = (torch.mean(F.relu(1.0 - real_disc)) + torch.mean(F.relu(1.0 - real_disc_aug))) / 2
    real_img_patches = make_biggan.extract_all_patches(real, real_lens)
    real_aug_imgs_patches = make_biggan.extract_all_patches(aug, aug_lens)
    real_disc_patches = P(torch.cat([real_img_patches, real_aug_imgs_patches], dim=0).detach())
    real_disc_loss_patch = torch.mean(F.relu(1.0 - real_disc_patches))
    disc_loss = real_disc_loss + fake_disc_loss + real_disc_loss_patch + fake_disc_loss_patch
    disc_loss.backward()
    for k, v in (('real_disc_loss', real_disc_loss), ('fake_disc_loss', fake_disc_loss),
                 ('real_disc_loss_patch', real_disc_loss_patch),
                 ('fake_disc_loss_patch', fake_disc_loss_patch), ('disc_loss', disc_loss)):
        rec['d.' + k] = v.detach().reshape(1)
    # away from the hinge kinks (fp32 errors are ~1e-6 here), so that fp32 and fp64 agree on every relu
    for s in (fake_disc, fake_disc_patches, real_disc, real_disc_aug, real_disc_patches):
        assert (s.abs() - 1).abs().min() > 2e-4
    for name in ('Discriminator', 'PatchDiscriminator'):
        for k, p in N[name].named_parameters():
            rec['d.grad.%s.%s' % (name, k)] = p.grad.detach().clone()
    opt_d.step()
    record_after(N, rec, 'd', ('Discriminator', 'PatchDiscriminator'))


def g_step(N, I, opt_g, rec):
    G, D, P, E, B, R, W = (N[k] for k in ('Generator', 'Discriminator', 'PatchDiscriminator',
                                          'StyleEncoder', 'StyleBackbone', 'Recognizer',
                                          'WriterIdentifier'))
    real, real_lens = I['real'].to(DT[0]), I['real_lens']
    real_lbs, real_lb_lens, real_wids = I['labels'], I['label_lens'], I['wids']
    opt_g.zero_grad()
    set_requires_grad([D, P, R, W, B], False)
    set_requires_grad([G, E], True)
    fake_lbs, fake_lb_lens = I['g.fake_labels'], I['g.fake_lens']
    z = I['g.z'].to(DT[0])
    fake_imgs = G(z, fake_lbs, fake_lb_lens)
    feat, real_img_feats = B(real)                                  # E(..., ret_feats=True,
    enc_z, mu, logvar = E(feat, real_lens, I['g.eps'].to(DT[0]))     #      vae_mode=True)
    style_imgs = G(enc_z, fake_lbs, fake_lb_lens)
    recn_imgs = G(enc_z, real_lbs, real_lb_lens)

    cat_fake_imgs = torch.cat([fake_imgs, style_imgs, recn_imgs], dim=0)
    cat_fake_lb_lens = torch.cat([fake_lb_lens, fake_lb_lens, real_lb_lens], dim=0)
    cat_fake_disc = D(cat_fake_imgs, cat_fake_lb_lens * CHAR_W, cat_fake_lb_lens)
    adv_loss = -torch.mean(cat_fake_disc)
    fake_img_patches = make_biggan.extract_all_patches(cat_fake_imgs, cat_fake_lb_lens * CHAR_W)
    fake_disc_patches = P(fake_img_patches)
    adv_loss_patch = -torch.mean(fake_disc_patches)

    ctc = lambda lp, y, il, yl: F.ctc_loss(lp, y, il, yl, blank=0, reduction='mean', zero_infinity=True)
    fake_img_lens = fake_lb_lens * CHAR_W
    fake_ctc_rand = R(fake_imgs, fake_img_lens)
    fake_ctc_loss_rand = ctc(fake_ctc_rand, fake_lbs, fake_img_lens // LEN_SCALE, fake_lb_lens)
    style_img_lens = fake_lb_lens * CHAR_W
    fake_ctc_style = R(style_imgs, style_img_lens)
    fake_ctc_loss_style = ctc(fake_ctc_style, fake_lbs, style_img_lens // LEN_SCALE, fake_lb_lens)
    recn_img_lens = real_lb_lens * CHAR_W
    fake_ctc_recn = R(recn_imgs, recn_img_lens)
    fake_ctc_loss_recn = ctc(fake_ctc_recn, real_lbs, recn_img_lens // LEN_SCALE, real_lb_lens)
    fake_ctc_loss = fake_ctc_loss_rand + fake_ctc_loss_recn + fake_ctc_loss_style

    feat_fake, _ = B(fake_imgs)                                     # E(fake, lens, B): mu
    styles, _, _ = E(feat_fake, fake_lb_lens * CHAR_W)
    info_loss = torch.mean(torch.abs(styles - z.detach()))

    recn_loss = make_loss.recn_l1_loss(recn_imgs, real, real_lens)

    cat_style_imgs = torch.cat([style_imgs, recn_imgs], dim=0)
    cat_style_img_lens = torch.cat([fake_lb_lens, real_lb_lens], dim=0) * CHAR_W
    feat_w, fake_imgs_feats = B(cat_style_imgs)                     # W(..., B, ret_feats=True)
    recn_wid_logits = W(feat_w, cat_style_img_lens)
    fake_wid_loss = F.cross_entropy(recn_wid_logits, real_wids.repeat(2))

    ctx_loss = torch.zeros(1, dtype=DT[0])
    for real_img_feat, fake_img_feat in zip(real_img_feats, fake_imgs_feats):
        fake_feat = fake_img_feat.chunk(2, dim=0)
        ctx_loss = ctx_loss + make_loss.cx_loss(real_img_feat, fake_feat[0])
        ctx_loss = ctx_loss + make_loss.cx_loss(real_img_feat, fake_feat[1])
    kl_loss = make_loss.kl_loss(mu, logvar)

    grad = lambda y, x: torch.autograd.grad(y, x, retain_graph=True)[0]
    grad_fake_adv = grad(adv_loss, cat_fake_imgs)
    grad_fake_OCR = grad(fake_ctc_loss_rand, fake_ctc_rand)
    grad_fake_info = grad(info_loss, fake_imgs)
    grad_fake_wid = grad(fake_wid_loss, recn_wid_logits)
    grad_fake_recn = grad(recn_loss, enc_z)
    std_grad_adv = torch.std(grad_fake_adv)
    stds = {k: torch.std(g) for k, g in (('ctc', grad_fake_OCR), ('info', grad_fake_info),
                                          ('wid', grad_fake_wid), ('recn', grad_fake_recn))}
    gp = {k: (std_grad_adv / (s + 1e-8)).detach() + 1 for k, s in stds.items()}
    gp['ctc'] = gp['ctc'].clamp_max(100)
    gp['wid'] = gp['wid'].clamp_max(10)

    g_loss = adv_loss + adv_loss_patch + \
        gp['ctc'] * fake_ctc_loss + \
        gp['info'] * info_loss + \
        gp['wid'] * fake_wid_loss + \
        gp['recn'] * recn_loss + \
        LAMBDA_CTX * ctx_loss + \
        LAMBDA_KL * kl_loss
    g_loss.backward()
    for s in (cat_fake_disc,):
        assert (s.abs() - 1).abs().min() > 2e-4
    for k, v in (('adv_loss', adv_loss), ('adv_loss_patch', adv_loss_patch),
                 ('fake_ctc_loss', fake_ctc_loss), ('fake_ctc_loss_rand', fake_ctc_loss_rand),
                 ('fake_ctc_loss_style', fake_ctc_loss_style),
                 ('fake_ctc_loss_recn', fake_ctc_loss_recn), ('info_loss', info_loss),
                 ('recn_loss', recn_loss), ('fake_wid_loss', fake_wid_loss), ('ctx_loss', ctx_loss),
                 ('kl_loss', kl_loss), ('g_loss', g_loss), ('std_adv', std_grad_adv)):
        rec['g.' + k] = v.detach().reshape(1)
    for k in gp:
        rec['g.gp_' + k] = gp[k].reshape(1)
        rec['g.std_' + k] = stds[k].detach().reshape(1)
    rec['g.enc_z'] = enc_z.detach()
    for name in ('Generator', 'StyleEncoder'):
        for k, p in N[name].named_parameters():
            rec['g.grad.%s.%s' % (name, k)] = p.grad.detach().clone()
    opt_g.step()
    record_after(N, rec, 'g', ('Generator', 'StyleEncoder'))


def record_after(N, rec, tag, stepped):
    """Every buffer (and G's renormalised embedding) after the step; the stepped nets' params."""
    for name, net in N.items():
        params = dict(net.named_parameters())
        for k, v in net.state_dict().items():
            if k not in params or k.endswith('text_embedding.weight'):
                rec['%s.after.%s.%s' % (tag, name, k)] = v.detach().clone()
        if name in stepped:
            for k, p in params.items():
                rec['%s.param.%s.%s' % (tag, name, k)] = p.detach().clone()


def run(dtype):
    """Both steps from the same initial state in dtype; returns the records."""
    DT[0] = dtype
    N = build()
    rec = {}
    for name, net in N.items():
        for k, v in net.state_dict().items():
            rec['%s.%s' % (name, k)] = v.detach().clone()
    I = inputs()
    for k, v in I.items():
        rec['in.' + k] = v.to(torch.int32) if v.dtype == torch.int64 else v
    for net in N.values():
        net.to(dtype)
    opt_g = torch.optim.Adam(list(N['Generator'].parameters()) + list(N['StyleEncoder'].parameters()),
                             lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(list(N['Discriminator'].parameters()) +
                             list(N['PatchDiscriminator'].parameters()), lr=LR, betas=BETAS)
    d_step(N, I, opt_d, rec)
    g_step(N, I, opt_g, rec)
    return rec


def fp32_deviation(rec, r32):
    """How far PyTorch's own float32 run lands from the float64 one: per scalar (relative to
    max(|value|, 1e-6)) and per gradient group (max over tensors of max|diff| / max(max|ref|,
    1e-3 * the group's largest)). Near-ties (max-pool windows, ReLU inputs of the frozen
    backbone on the generated images) make some of these far larger than float32 rounding;
    the C test allows a multiple of them."""
    dev = {}
    for k, v in rec.items():
        if k.startswith(('d.', 'g.')) and v.numel() == 1 and v.is_floating_point() and '.after.' not in k:
            dev['dev.' + k] = torch.tensor([abs(v.item() - r32[k].item()) / max(abs(v.item()), 1e-6)])
    for tag in ('d.grad.', 'g.grad.'):
        keys = [k for k in rec if k.startswith(tag)]
        group = max(rec[k].abs().max().item() for k in keys)
        worst = 0.0
        for k in keys:
            scale = max(rec[k].abs().max().item(), 1e-3 * group)
            worst = max(worst, (rec[k].double() - r32[k].double()).abs().max().item() / scale)
        dev['dev.' + tag[:-1]] = torch.tensor([worst])
    return dev


def main():
    torch.set_num_threads(1)
    rec = run(torch.float64)
    dev = fp32_deviation(rec, run(torch.float32))
    for k, v in rec.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    for k in sorted(rec):
        if k.startswith(('d.', 'g.')) and rec[k].numel() == 1 and '.after.' not in k:
            print('%-28s %.8g   (float32 run off by %.2g)' % (k, rec[k].item(), dev['dev.' + k].item()))
    for k in ('dev.d.grad', 'dev.g.grad'):
        print('%-28s %.3g' % (k, dev[k].item()))
    rec.update(dev)
    oracle_util.save(os.path.join(HERE, 'gan_step.safetensors'), rec, seed=SEED, **meta())


if __name__ == '__main__':
    main()
