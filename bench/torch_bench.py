#!/usr/bin/env python3
"""torch_bench.py: the workloads of bench/higan_bench.c with PyTorch, on the same shapes.

    python3 bench/torch_bench.py [--threads N] [--repeats N] [--warmup N] [--workload NAME]...
                                 [--precision fp32|bf16] [--json FILE] [--higan-json FILE]

The networks and losses are the PyTorch reimplementations of the official HiGAN+ code that
the test oracles use (tests/oracle/make_biggan.py: Generator, Discriminator, extract_all_patches;
make_styler.py: StyleBackbone, StyleEncoder, WriterIdentifier, Recognizer; make_loss.py:
recn_l1_loss, kl_loss, cx_loss; make_gan.py: the Generator callable several times in one graph,
and the D and G steps, reproduced below without the oracle's recording), at the IAM sizes
(those of --higan-json's "config" when given, else the official ones: G ch 64, style 32,
embedding 120, D and PatchD ch 64, backbone and Recognizer 16/256, BiLSTM depth 2, 372
writers, Recognizer dropout 0.2 for its training step).

The fixed batch is the one of higan_bench.c (batch 8, real words of [10, 8, 6, 6, 4, 4, 4, 1]
characters at 32 px per character padded to 320, augmented widths [224, 128, 160, 192, 128,
160, 128, 32], fake words of [10, 9, 8, 6, 6, 2, 1, 1] characters); the values are random
(other values than higan's, the same shapes and therefore the same work).

Each workload runs in a forked child that imports torch, builds its networks, runs --warmup
untimed and --repeats timed runs; its peak memory is the child's ru_maxrss (os.wait4), which
includes the torch import (the "torch baseline" line gives that part alone).

FLOPs: the work is the same as higan's, so GFLOP/s uses higan's GEMM count of each workload
(from --higan-json); without it the GFLOP/s column is left empty. "% peak" is relative to the
peak that higan_bench measured (fp32: its FMA loop on the same thread count).

With --higan-json (a higan_bench --json file of the same settings) a combined table follows:
workload | higan s | torch s | ratio (torch / higan, > 1: higan is faster) | GFLOP/s | % peak |
peak MB, each for both.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.join(HERE, '..', 'tests', 'oracle')

WORKLOADS = ['d_step', 'g_step', 'iteration', 'gen8', 'gen64', 'ocr_train', 'ocr_fwd']
REAL_LENS = [10, 8, 6, 6, 4, 4, 4, 1]
FAKE_LENS = [10, 9, 8, 6, 6, 2, 1, 1]
AUG_WIDTHS = [224, 128, 160, 192, 128, 160, 128, 32]
CHAR_W, LEN_SCALE, L_MAX, B_WORDS = 32, 16, 10, 8
OFFICIAL = dict(G_ch=64, style_dim=32, embed_dim=120, n_class=80, D_ch=64, P_ch=64, B_resolution=16,
                B_max_dim=256, n_writer=372, R_resolution=16, R_max_dim=256, R_depth=2, R_dropout=0.2,
                num_critic_train=4)
LR_GAN, BETAS_GAN, LR_OCR = 2e-4, (0.5, 0.999), 1e-3
LAMBDA_CTX, LAMBDA_KL = 2.0, 1e-4


# ---- everything below runs in the children (torch is imported there) ---------------------------
def import_torch(threads):
    os.environ['OMP_NUM_THREADS'] = str(threads)
    sys.path.insert(0, ORACLE)
    import torch
    torch.set_num_threads(threads)
    return torch


def make_data(torch, style_dim, n=B_WORDS):
    """The batch of n words: entries b * 8 // n of the lists, as higan_bench.c (--gan-batch)."""
    torch.manual_seed(20240607)
    B = n
    idx = [b * B_WORDS // n for b in range(n)]
    real_lens = [REAL_LENS[k] for k in idx]
    fake_lens = [FAKE_LENS[k] for k in idx]
    aug_widths = [AUG_WIDTHS[k] for k in idx]

    def labels(lens):
        y = torch.zeros(len(lens), L_MAX, dtype=torch.int64)
        for b, k in enumerate(lens):
            y[b, :k] = torch.randint(2, 80, (k,))
        return y

    def images(widths, W):
        x = torch.rand(len(widths), 1, 64, W) * 2 - 1
        for b, w in enumerate(widths):
            x[b, :, :, w:] = -1.0
        return x

    T = {}
    T['label_lens'] = torch.tensor(real_lens)
    T['real_lens'] = T['label_lens'] * CHAR_W
    T['real'] = images(T['real_lens'].tolist(), CHAR_W * L_MAX)
    T['labels'] = labels(real_lens)
    T['aug_lens'] = torch.tensor(aug_widths)
    T['aug'] = images(aug_widths, max(aug_widths))
    T['wids'] = torch.tensor([(37 * k + 5) % 372 for k in idx])
    T['fake_lens'] = torch.tensor(fake_lens)
    for tag in ('d', 'g'):
        T[tag + '.fake_labels'] = labels(fake_lens)
        T[tag + '.z'] = torch.randn(B, style_dim)
        T[tag + '.eps'] = torch.randn(B, style_dim)
    T['lens64'] = torch.tensor(FAKE_LENS * 8)
    T['labels64'] = labels(FAKE_LENS * 8)
    T['z64'] = torch.randn(64, style_dim)
    return T


def set_requires_grad(nets, flag):
    for n in nets:
        for p in n.parameters():
            p.requires_grad_(flag)


class GAN:
    """The seven networks and the two optimizers of GlobalLocalAdversarialModel at cfg's sizes."""

    def __init__(self, torch, cfg):
        import make_biggan
        import make_gan
        import make_styler
        torch.manual_seed(123456)
        self.G = make_gan.Generator(ch=cfg['G_ch'], style_dim=cfg['style_dim'], embed_dim=cfg['embed_dim'],
                                    n_class=cfg['n_class'], bottom=4, input_nc=1)
        self.D = make_biggan.Discriminator(ch=cfg['D_ch'])
        self.P = make_biggan.Discriminator(ch=cfg['P_ch'])
        self.B = make_styler.StyleBackbone(cfg['B_resolution'], cfg['B_max_dim'])
        self.E = make_styler.StyleEncoder(cfg['style_dim'], self.B.out_dim)
        self.W = make_styler.WriterIdentifier(cfg['n_writer'], self.B.out_dim)
        self.R = make_styler.Recognizer(cfg['n_class'], cfg['R_resolution'], cfg['R_max_dim'], cfg['R_depth'])
        self.nets = [self.G, self.D, self.P, self.B, self.E, self.W, self.R]
        self.opt_g = torch.optim.Adam(list(self.G.parameters()) + list(self.E.parameters()), lr=LR_GAN,
                                      betas=BETAS_GAN)
        self.opt_d = torch.optim.Adam(list(self.D.parameters()) + list(self.P.parameters()), lr=LR_GAN,
                                      betas=BETAS_GAN)


def d_step(torch, N, I):
    """make_gan.d_step (networks/model.py's D step) without the oracle's recording."""
    import make_biggan
    F = torch.nn.functional
    G, D, P, E, B = N.G, N.D, N.P, N.E, N.B
    for n in N.nets:
        n.train()
    real, real_lens, aug, aug_lens = I['real'], I['real_lens'], I['aug'], I['aug_lens']
    real_lbs, real_lb_lens = I['labels'], I['label_lens']
    N.opt_d.zero_grad()
    set_requires_grad([G, E, N.R, N.W, B], False)
    set_requires_grad([D, P], True)
    with torch.no_grad():
        fake_lbs, fake_lb_lens = I['d.fake_labels'], I['fake_lens']
        z = I['d.z']
        fake_imgs = G(z, fake_lbs, fake_lb_lens)
        feat, _ = B(real)
        enc_z, _, _ = E(feat, real_lens, I['d.eps'])
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
    N.opt_d.step()
    return disc_loss.item()


def g_step(torch, N, I):
    """make_gan.g_step (networks/model.py's G step with the adaptive balancing) without the
    oracle's recording and asserts."""
    import make_biggan
    import make_loss
    F = torch.nn.functional
    G, D, P, E, B, R, W = N.G, N.D, N.P, N.E, N.B, N.R, N.W
    for n in N.nets:
        n.train()
    real, real_lens = I['real'], I['real_lens']
    real_lbs, real_lb_lens, real_wids = I['labels'], I['label_lens'], I['wids']
    N.opt_g.zero_grad()
    set_requires_grad([D, P, R, W, B], False)
    set_requires_grad([G, E], True)
    fake_lbs, fake_lb_lens = I['g.fake_labels'], I['fake_lens']
    z = I['g.z']
    fake_imgs = G(z, fake_lbs, fake_lb_lens)
    feat, real_img_feats = B(real)
    enc_z, mu, logvar = E(feat, real_lens, I['g.eps'])
    style_imgs = G(enc_z, fake_lbs, fake_lb_lens)
    recn_imgs = G(enc_z, real_lbs, real_lb_lens)

    cat_fake_imgs = torch.cat([fake_imgs, style_imgs, recn_imgs], dim=0)
    cat_fake_lb_lens = torch.cat([fake_lb_lens, fake_lb_lens, real_lb_lens], dim=0)
    cat_fake_disc = D(cat_fake_imgs, cat_fake_lb_lens * CHAR_W, cat_fake_lb_lens)
    adv_loss = -torch.mean(cat_fake_disc)
    fake_img_patches = make_biggan.extract_all_patches(cat_fake_imgs, cat_fake_lb_lens * CHAR_W)
    fake_disc_patches = P(fake_img_patches)
    adv_loss_patch = -torch.mean(fake_disc_patches)

    def ctc(lp, y, il, yl):
        return F.ctc_loss(lp, y, il, yl, blank=0, reduction='mean', zero_infinity=True)
    fake_img_lens = fake_lb_lens * CHAR_W
    fake_ctc_rand = R(fake_imgs, fake_img_lens)
    fake_ctc_loss_rand = ctc(fake_ctc_rand, fake_lbs, fake_img_lens // LEN_SCALE, fake_lb_lens)
    fake_ctc_style = R(style_imgs, fake_img_lens)
    fake_ctc_loss_style = ctc(fake_ctc_style, fake_lbs, fake_img_lens // LEN_SCALE, fake_lb_lens)
    recn_img_lens = real_lb_lens * CHAR_W
    fake_ctc_recn = R(recn_imgs, recn_img_lens)
    fake_ctc_loss_recn = ctc(fake_ctc_recn, real_lbs, recn_img_lens // LEN_SCALE, real_lb_lens)
    fake_ctc_loss = fake_ctc_loss_rand + fake_ctc_loss_recn + fake_ctc_loss_style

    feat_fake, _ = B(fake_imgs)
    styles, _, _ = E(feat_fake, fake_lb_lens * CHAR_W)
    info_loss = torch.mean(torch.abs(styles - z.detach()))

    recn_loss = make_loss.recn_l1_loss(recn_imgs, real, real_lens)

    cat_style_imgs = torch.cat([style_imgs, recn_imgs], dim=0)
    cat_style_img_lens = torch.cat([fake_lb_lens, real_lb_lens], dim=0) * CHAR_W
    feat_w, fake_imgs_feats = B(cat_style_imgs)
    recn_wid_logits = W(feat_w, cat_style_img_lens)
    fake_wid_loss = F.cross_entropy(recn_wid_logits, real_wids.repeat(2))

    ctx_loss = torch.zeros(1)
    for real_img_feat, fake_img_feat in zip(real_img_feats, fake_imgs_feats):
        fake_feat = fake_img_feat.chunk(2, dim=0)
        ctx_loss = ctx_loss + make_loss.cx_loss(real_img_feat, fake_feat[0])
        ctx_loss = ctx_loss + make_loss.cx_loss(real_img_feat, fake_feat[1])
    kl_loss = make_loss.kl_loss(mu, logvar)

    def grad(y, x):
        return torch.autograd.grad(y, x, retain_graph=True)[0]
    grad_fake_adv = grad(adv_loss, cat_fake_imgs)
    grad_fake_OCR = grad(fake_ctc_loss_rand, fake_ctc_rand)
    grad_fake_info = grad(info_loss, fake_imgs)
    grad_fake_wid = grad(fake_wid_loss, recn_wid_logits)
    grad_fake_recn = grad(recn_loss, enc_z)
    std_grad_adv = torch.std(grad_fake_adv)
    gp = {k: (std_grad_adv / (torch.std(g) + 1e-8)).detach() + 1
          for k, g in (('ctc', grad_fake_OCR), ('info', grad_fake_info), ('wid', grad_fake_wid),
                       ('recn', grad_fake_recn))}
    gp['ctc'] = gp['ctc'].clamp_max(100)
    gp['wid'] = gp['wid'].clamp_max(10)
    g_loss = adv_loss + adv_loss_patch + gp['ctc'] * fake_ctc_loss + gp['info'] * info_loss + \
        gp['wid'] * fake_wid_loss + gp['recn'] * recn_loss + LAMBDA_CTX * ctx_loss + LAMBDA_KL * kl_loss
    g_loss.backward()
    N.opt_g.step()
    return g_loss.item()


def make_recognizer(torch, cfg, dropout):
    import make_styler

    class Recognizer(make_styler.Recognizer):
        """make_styler's Recognizer with the CNN's dropout of the OCR training config."""

        def __init__(self):
            super().__init__(cfg['n_class'], cfg['R_resolution'], cfg['R_max_dim'], cfg['R_depth'])
            self.cnn_backbone, self.cnn_ctc, _ = make_styler.cnn_layers(cfg['R_resolution'], cfg['R_max_dim'],
                                                                        dropout=dropout)
    torch.manual_seed(123456)
    return Recognizer()


def workload(name, args, cfg):
    """Builds the workload and returns (run, context manager factory)."""
    torch = import_torch(args.threads)
    I = make_data(torch, cfg['style_dim'], args.gan_batch if name in ('d_step', 'g_step') else B_WORDS)
    F = torch.nn.functional
    if name in ('d_step', 'g_step'):
        N = GAN(torch, cfg)
        step = d_step if name == 'd_step' else g_step
        return torch, lambda: step(torch, N, I)
    if name in ('gen8', 'gen64'):
        import make_biggan
        torch.manual_seed(123456)
        G = make_biggan.Generator(ch=cfg['G_ch'], style_dim=cfg['style_dim'], embed_dim=cfg['embed_dim'],
                                  n_class=cfg['n_class'], bottom=4, input_nc=1)
        G.eval()
        if name == 'gen8':
            z, y, lens = I['z64'][:8], I['d.fake_labels'], I['fake_lens']
        else:
            z, y, lens = I['z64'], I['labels64'], I['lens64']

        def gen():
            with torch.no_grad():
                return G(z, y, lens)
        return torch, gen
    if name in ('ocr_train', 'ocr_fwd'):
        R = make_recognizer(torch, cfg, cfg['R_dropout'] if name == 'ocr_train' else 0.0)
        x, lens, y, yl = I['real'], I['real_lens'], I['labels'], I['label_lens']
        if name == 'ocr_fwd':
            R.eval()

            def fwd():
                with torch.no_grad():
                    return R(x, lens)
            return torch, fwd
        R.train()
        opt = torch.optim.Adam(R.parameters(), lr=LR_OCR)

        def train():
            opt.zero_grad()
            lp = R(x, lens)
            loss = F.ctc_loss(lp, y, lens // LEN_SCALE, yl, blank=0, reduction='mean', zero_infinity=True)
            loss.backward()
            opt.step()
            return loss.item()
        return torch, train
    if name == 'baseline':
        x = torch.ones(4, 4)
        return torch, lambda: x @ x        # maps the BLAS library (blas_in_use)
    raise ValueError(name)


def blas_in_use():
    """The BLAS library this process mapped (Debian's torch links libblas.so.3, which the
    alternatives system points at netlib's reference BLAS unless OpenBLAS is installed)."""
    try:
        with open('/proc/self/maps') as f:
            paths = sorted({ln.split()[-1] for ln in f if 'blas' in ln and '/' in ln})
    except OSError:
        return '?'
    for p in paths:
        real = os.path.realpath(p)
        if 'openblas' in real:
            return 'OpenBLAS (%s)' % real
        if 'mkl' in real:
            return 'MKL (%s)' % real
        if '/blas/' in real:
            return 'netlib reference BLAS (%s)' % real
    return ', '.join(paths) or 'none mapped'


def run_child(name, args, cfg):
    t0 = time.time()
    torch, fn = workload(name, args, cfg)
    setup = time.time() - t0
    if args.precision == 'bf16':
        def ctx():
            return torch.autocast('cpu', dtype=torch.bfloat16)
    else:
        import contextlib
        ctx = contextlib.nullcontext
    for _ in range(args.warmup):
        with ctx():
            fn()
    times, cpu = [], []
    for _ in range(args.repeats):
        c1 = time.process_time()
        t1 = time.perf_counter()
        with ctx():
            fn()
        times.append(time.perf_counter() - t1)
        cpu.append(time.process_time() - c1)
    return dict(ok=1, times=times, cpu=cpu, setup_s=setup, version=torch.__version__, blas=blas_in_use())


def in_child(name, args, cfg):
    """Runs the workload in a forked child; returns its result with peak_mb (ru_maxrss)."""
    if args.no_fork:
        import resource
        r = run_child(name, args, cfg)
        r['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return r
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            out = run_child(name, args, cfg)
        except Exception as e:       # reported by the parent
            out = dict(ok=0, msg='%s: %s' % (type(e).__name__, e))
        with os.fdopen(wfd, 'w') as f:
            f.write(json.dumps(out))
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        data = f.read()
    _, status, ru = os.wait4(pid, 0)
    try:
        r = json.loads(data)
    except ValueError:
        r = dict(ok=0, msg='the child died (status %d)' % status)
    r['peak_mb'] = ru.ru_maxrss / 1024.0
    return r


# ---- the parent: statistics and tables ------------------------------------------------------------
def stats(times):
    s = sorted(times)
    n = len(s)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return med, s[0], s[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=0, help='intra-op threads (default: higan json, else CPUs)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--workload', action='append', default=[], help='names or comma lists (default: all)')
    ap.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32', help='bf16: torch.autocast')
    ap.add_argument('--json', help='write the results here')
    ap.add_argument('--higan-json', help="higan_bench's --json of the same settings: FLOPs, peak, combined table")
    ap.add_argument('--gan-batch', type=int, default=0,
                    help='words in the D and G steps (default: higan json, else 8)')
    ap.add_argument('--no-fork', action='store_true')
    args = ap.parse_args()

    hj = None
    if args.higan_json:
        with open(args.higan_json) as f:
            hj = json.load(f)
    cfg = dict(OFFICIAL)
    if hj:
        cfg.update({k: v for k, v in hj.get('config', {}).items() if k in cfg})
    if args.threads <= 0:
        args.threads = hj['threads'] if hj else (os.cpu_count() or 1)
    if args.gan_batch <= 0:
        args.gan_batch = hj.get('gan_batch', B_WORDS) if hj else B_WORDS
    if not 1 <= args.gan_batch <= B_WORDS:
        ap.error('--gan-batch must be 1..8')
    if hj and (hj.get('gan_batch', B_WORDS) != args.gan_batch or hj['threads'] != args.threads):
        print('torch_bench: warning: higan ran with %d threads and GAN batch %s, this run %d and %d' % (
            hj['threads'], hj.get('gan_batch', B_WORDS), args.threads, args.gan_batch), file=sys.stderr)
    want = []
    for w in args.workload or ['all']:
        for t in w.split(','):
            if t == 'all':
                want += WORKLOADS
            elif t in WORKLOADS:
                want.append(t)
            else:
                ap.error('unknown workload %r (%s, all)' % (t, ', '.join(WORKLOADS)))
    if 'iteration' in want:
        want += ['d_step', 'g_step']
    want = [w for w in WORKLOADS if w in want]

    peak = None             # (all threads, one core, name), from higan_bench's CPU-time measurement
    if hj:
        p = hj['peak']
        peak = (p['fp32_n'], p['fp32_1'], 'fp32 FMA') if args.precision == 'fp32' else \
            ((p['amx_n'], p['amx_1'], 'AMX-BF16') if p.get('amx_n', 0) > 0 else
             (p['bf16_n'], p['bf16_1'], 'AVX512-BF16'))

    base = in_child('baseline', args, cfg)
    if not base.get('ok'):
        print('torch_bench: cannot run torch: %s' % base.get('msg', '?'), file=sys.stderr)
        return 1
    print('torch_bench: torch %s, %d threads, %s, %d warm-up + %d timed runs per workload, GAN batch %d; '
          'torch baseline (import only) %.0f MB' % (base.get('version', '?'), args.threads, args.precision,
                                                    args.warmup, args.repeats, args.gan_batch,
                                                    base.get('peak_mb', 0)))
    print('  BLAS: %s; convolutions: oneDNN (MKL-DNN) where torch picks it' % base.get('blas', '?'))
    sys.stdout.flush()
    res = {}
    for w in want:
        if w == 'iteration':
            continue
        print('  %s ...' % w, file=sys.stderr)
        r = in_child(w, args, cfg)
        if not r.get('ok'):
            print('torch_bench: %s failed: %s' % (w, r.get('msg', '?')), file=sys.stderr)
            continue
        med, mn, mx = stats(r['times'])
        res[w] = dict(median_s=med, min_s=mn, max_s=mx, cpu_s=stats(r['cpu'])[0], peak_mb=r['peak_mb'],
                      setup_s=r['setup_s'], times_s=r['times'])
    k = 1.0 / cfg['num_critic_train']
    if 'iteration' in want and 'd_step' in res and 'g_step' in res:
        d, g = res['d_step'], res['g_step']
        res['iteration'] = dict(median_s=d['median_s'] + k * g['median_s'], min_s=d['min_s'] + k * g['min_s'],
                                max_s=d['max_s'] + k * g['max_s'], cpu_s=d['cpu_s'] + k * g['cpu_s'],
                                peak_mb=max(d['peak_mb'], g['peak_mb']))
    hw = {k: v for k, v in hj['workloads'].items() if 'median_s' in v} if hj else {}
    hfail = {k: v['failed'] for k, v in hj['workloads'].items() if 'failed' in v} if hj else {}
    for w, r in res.items():
        if w in hw and hw[w].get('flops'):
            r['flops'] = hw[w]['flops']
            r['gflops_s'] = r['flops'] / r['median_s'] * 1e-9
            if peak:
                r['pct_peak'] = 100.0 * r['gflops_s'] / peak[0]
                r['pct_peak_cpu'] = 100.0 * r['flops'] / r['cpu_s'] * 1e-9 / peak[1] if r['cpu_s'] > 0 else 0.0

    print('\n%-10s %9s %9s %9s %6s %8s %8s %8s %8s' % ('workload', 'median s', 'min s', 'max s', 'cpu', 'GFLOP/s',
                                                         '% peak', '%pk cpu', 'peak MB'))
    for w in want:
        r = res.get(w)
        if not r:
            print('%-10s %9s' % (w, 'failed'))
            continue
        print('%-10s %9.4f %9.4f %9.4f %5.0f%% %8s %8s %8s %8.0f' % (
            w, r['median_s'], r['min_s'], r['max_s'], 100.0 * r['cpu_s'] / (r['median_s'] * args.threads),
            '%.1f' % r['gflops_s'] if 'gflops_s' in r else '-',
            '%.1f%%' % r['pct_peak'] if 'pct_peak' in r else '-',
            '%.1f%%' % r['pct_peak_cpu'] if 'pct_peak_cpu' in r else '-', r['peak_mb']))
    print('(cpu: CPU time / (threads x wall time), below 100% when the machine is shared)')
    for w, n in (('gen8', 8), ('gen64', 64)):
        if w in res:
            print('%s: %.1f words/s' % (w, n / res[w]['median_s']))

    if hj:
        print('\nhigan (%s, %s) vs PyTorch %s (%s), %d threads; ratio = torch s / higan s (> 1: higan faster); '
              'medians of %d runs' % (hj.get('precision'), hj.get('cpu_level'), 'torch', args.precision,
                                      args.threads, args.repeats))
        print('%-10s | %9s | %9s | %7s | %17s | %15s | %15s | %11s | %9s' % (
            'workload', 'higan s', 'torch s', 'ratio', 'GFLOP/s h / t', '% peak h / t', 'peak MB h / t',
            'cpu h / t', 'cpu ratio'))
        print('-' * 10 + '-+-' + '-+-'.join('-' * n for n in (9, 9, 7, 17, 15, 15, 11, 9)))
        for w in want:
            h, t = hw.get(w), res.get(w)
            if not h or not t:
                why = []
                if not h:
                    why.append('higan: ' + hfail.get(w, 'not run'))
                if not t:
                    why.append('torch: failed')
                line = '%-10s | %9s | %9s | %7s | %17s | %15s | %15s |' % (
                    w, '-' if not h else '%.4f' % h['median_s'], '-' if not t else '%.4f' % t['median_s'], '-',
                    '-', '-', '%s / %s' % ('%.0f' % h['peak_mb'] if h else '-', '%.0f' % t['peak_mb'] if t else '-'))
                print(line + ' ' + '; '.join(why))
                continue
            hc = h.get('cpu_s', 0.0)
            print('%-10s | %9.4f | %9.4f | %6.2fx | %7.1f / %7.1f | %5.1f%% / %5.1f%% | %6.0f / %6.0f | %3.0f%% / %3.0f%%'
                  ' | %8s' % (w, h['median_s'], t['median_s'], t['median_s'] / h['median_s'], h['gflops_s'],
                              t.get('gflops_s', 0.0), h['pct_peak'], t.get('pct_peak', 0.0), h['peak_mb'],
                              t['peak_mb'], 100.0 * hc / (h['median_s'] * hj['threads']),
                              100.0 * t['cpu_s'] / (t['median_s'] * args.threads),
                              '%.2fx' % (t['cpu_s'] / hc) if hc > 0 else '-'))
        if peak:
            print('(%% peak of %s on %d threads as higan_bench measured it (CPU-time based): %.1f GFLOP/s;\n'
                  " GFLOP/s of both from higan's GEMM count of the same work; iteration = d_step + g_step / %d;\n"
                  " peak MB: ru_maxrss of each workload's process, torch's includes its import (%.0f MB);\n"
                  ' cpu: CPU time / (threads x wall time), below 100%% when the machine is shared;\n'
                  ' cpu ratio: torch CPU s / higan CPU s, less sensitive to the load than the wall-time ratio)' % (
                      peak[2], args.threads, peak[0], cfg['num_critic_train'], base.get('peak_mb', 0)))
        for w, n in (('gen8', 8), ('gen64', 64)):
            if w in res and w in hw:
                print('%s: higan %.1f words/s, torch %.1f words/s' % (w, n / hw[w]['median_s'],
                                                                      n / res[w]['median_s']))

    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(tool='torch', version=base.get('version'), threads=args.threads,
                           precision=args.precision, repeats=args.repeats, warmup=args.warmup,
                           gan_batch=args.gan_batch, blas=base.get('blas'), baseline_mb=base.get('peak_mb'), config=cfg, workloads=res),
                      f, indent=2)
    return 0 if all(w in res for w in want) else 1


if __name__ == '__main__':
    sys.exit(main())
