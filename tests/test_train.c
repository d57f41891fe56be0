/* Loss trajectory: a conv + BiLSTM + CTC recogniser trained for 12 Adam steps must follow
   the PyTorch run of tests/oracle/make_train.py step by step (same weights, same batch). */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"

enum { B = 3, H = 8, W = 16, NCLASS = 7, HID = 5, LAYERS = 2, STEPS = 12 };

typedef struct {
    higan_params p;
    int conv1_w, conv1_b, conv2_w, conv2_b, cls_w, cls_b;
    int lstm[LAYERS * 2 * 4];      /* (layer*2 + direction)*4 + {w_ih, w_hh, b_ih, b_hh} */
} net;

static void net_init(net *n) {
    int64_t c1w[4] = {4, 1, 3, 3}, c1b[1] = {4}, c2w[4] = {6, 4, 3, 3}, c2b[1] = {6};
    int64_t cw[2] = {NCLASS, 2 * HID}, cb[1] = {NCLASS};
    int l, d;
    higan_params_init(&n->p);
    n->conv1_w = higan_params_add(&n->p, "conv1.weight", HIGAN_PARAM, 4, c1w);
    n->conv1_b = higan_params_add(&n->p, "conv1.bias", HIGAN_PARAM, 1, c1b);
    n->conv2_w = higan_params_add(&n->p, "conv2.weight", HIGAN_PARAM, 4, c2w);
    n->conv2_b = higan_params_add(&n->p, "conv2.bias", HIGAN_PARAM, 1, c2b);
    for (l = 0; l < LAYERS; ++l)
        for (d = 0; d < 2; ++d) {
            char name[64];
            const char *sfx = d ? "_reverse" : "";
            int64_t ih[2] = {4 * HID, l == 0 ? 24 : 2 * HID}, hh[2] = {4 * HID, HID}, bias[1] = {4 * HID};
            int *h = &n->lstm[(l * 2 + d) * 4];
            snprintf(name, sizeof name, "lstm.weight_ih_l%d%s", l, sfx); h[0] = higan_params_add(&n->p, name, HIGAN_PARAM, 2, ih);
            snprintf(name, sizeof name, "lstm.weight_hh_l%d%s", l, sfx); h[1] = higan_params_add(&n->p, name, HIGAN_PARAM, 2, hh);
            snprintf(name, sizeof name, "lstm.bias_ih_l%d%s", l, sfx);   h[2] = higan_params_add(&n->p, name, HIGAN_PARAM, 1, bias);
            snprintf(name, sizeof name, "lstm.bias_hh_l%d%s", l, sfx);   h[3] = higan_params_add(&n->p, name, HIGAN_PARAM, 1, bias);
        }
    n->cls_w = higan_params_add(&n->p, "cls.weight", HIGAN_PARAM, 2, cw);
    n->cls_b = higan_params_add(&n->p, "cls.bias", HIGAN_PARAM, 1, cb);
    higan_params_alloc(&n->p);
}

/* log-probs [T, B, C] of the batch */
static higan_var *net_forward(higan_tape *t, net *n, float *x, const int *in_lens) {
    int64_t xs[4] = {B, 1, H, W};
    int perm_bwch[4] = {0, 3, 1, 2}, perm_tbc[3] = {1, 0, 2};
    int64_t seq_shape[3] = {B, W / 2, 6 * (H / 2)};
    higan_var *lw[LAYERS * 2 * 4];
    higan_var *h;
    int i;
    h = higan_var_wrap(t, x, 4, xs);
    h = higan_relu(t, higan_conv2d(t, h, higan_param_var(t, &n->p, n->conv1_w),
                                   higan_param_var(t, &n->p, n->conv1_b), 1, 1, 1, 1, 1, 1));
    h = higan_relu(t, higan_conv2d(t, h, higan_param_var(t, &n->p, n->conv2_w),
                                   higan_param_var(t, &n->p, n->conv2_b), 2, 2, 1, 1, 1, 1));
    h = higan_reshape(t, higan_permute(t, h, perm_bwch), 3, seq_shape);     /* [B, T, C*H] */
    for (i = 0; i < LAYERS * 2 * 4; ++i) lw[i] = higan_param_var(t, &n->p, n->lstm[i]);
    h = higan_lstm(t, h, in_lens, HID, LAYERS, 1, lw);                       /* [B, T, 2*HID] */
    h = higan_linear(t, h, higan_param_var(t, &n->p, n->cls_w), higan_param_var(t, &n->p, n->cls_b));
    return higan_permute(t, higan_log_softmax(t, h), perm_tbc);
}

static int *load_ints(const higan_safetensors *st, const char *name, int64_t n) {
    int64_t tmp[16];
    int *out = (int *)malloc(sizeof(int) * (size_t)n);
    int64_t i;
    if (n > 16 || higan_safetensors_read_i64(st, name, tmp, n) != HIGAN_OK) {
        CHECK(0, "fixture %s: %s", name, higan_last_error());
        return out;
    }
    for (i = 0; i < n; ++i) out[i] = (int)tmp[i];
    return out;
}

int main(void) {
    higan_safetensors st;
    higan_arena arena;
    higan_tape tape;
    net n;
    higan_adam opt = higan_adam_default(3e-3);
    float x[B * H * W], losses[STEPS], *ref_losses;
    int *targets, *target_lens, *in_lens;
    int step, i;
    if (!check_open_fixture(&st, "train_ctc.safetensors")) return check_finish();
    net_init(&n);
    CHECK(higan_params_load(&n.p, &st, "init.", NULL) == HIGAN_OK, "load initial weights by PyTorch name: %s",
          higan_last_error());
    higan_safetensors_read_f32(&st, "x", x, B * H * W);
    targets = load_ints(&st, "targets", 9);
    target_lens = load_ints(&st, "target_lengths", B);
    in_lens = load_ints(&st, "input_lengths", B);
    ref_losses = check_load(&st, "losses", NULL);
    higan_arena_init(&arena, (size_t)8 << 20);
    higan_tape_init(&tape, &arena, 256);
    for (step = 0; step < STEPS; ++step) {
        higan_var *loss;
        higan_tape_reset(&tape);
        higan_params_zero_grad(&n.p);
        loss = higan_ctc_loss(&tape, net_forward(&tape, &n, x, in_lens), targets, in_lens, target_lens, 0, 1);
        if (!loss || higan_tape_backward(&tape, loss, NULL) != HIGAN_OK) {
            CHECK(0, "step %d failed: %s", step, higan_last_error());
            break;
        }
        losses[step] = loss->data[0];
        if (step == 0) {    /* every parameter gradient of the first step */
            int ok = 1;
            for (i = 0; i < n.p.count; ++i) {
                char name[160];
                float *ref;
                snprintf(name, sizeof name, "grad0.%s", n.p.entries[i].name);
                ref = check_load(&st, name, NULL);
                if (ref) ok &= check_close(name, higan_params_grad(&n.p, i), ref, n.p.entries[i].numel, 1e-6f, 1e-4f);
                free(ref);
            }
            CHECK(ok, "step 0: all %d parameter gradients match PyTorch", n.p.count);
        }
        higan_adam_step(&opt, &n.p);
    }
    if (step == STEPS && ref_losses) {
        check_close("CTC loss trajectory over 12 Adam steps", losses, ref_losses, STEPS, 1e-6f, 1e-5f);
        CHECK(losses[STEPS - 1] < losses[0] - 0.05f, "the loss decreases (%.4f -> %.4f)", losses[0], losses[STEPS - 1]);
        for (i = 0; i < n.p.count; ++i) {
            char name[160];
            float *ref;
            snprintf(name, sizeof name, "final.%s", n.p.entries[i].name);
            ref = check_load(&st, name, NULL);
            if (ref) check_close(name, higan_params_data(&n.p, i), ref, n.p.entries[i].numel, 1e-5f, 1e-4f);
            free(ref);
        }
    }
    free(ref_losses); free(targets); free(target_lens); free(in_lens);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    higan_params_free(&n.p);
    higan_safetensors_free(&st);
    return check_finish();
}
