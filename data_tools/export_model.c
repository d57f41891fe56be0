/* export_model - copy chosen networks of a higan checkpoint into a weights-only file.

   usage: export_model [--nets LIST] IN.safetensors OUT.safetensors

   A training checkpoint (train_gan's last.safetensors) holds all seven networks plus both
   Adam states, the RNG and the loader position: about four times the weights. What a user of
   the model needs is smaller: the Generator, StyleEncoder and StyleBackbone to write
   handwriting (generate.c), and the Recognizer and WriterIdentifier to score it
   (evaluate.c). This loads those networks (configuration from the file's metadata) and writes
   them without optimizer state, atomically (OUT.tmp, then renamed).

   --nets LIST   comma-separated network names (Generator, StyleEncoder, StyleBackbone,
                 Discriminator, PatchDiscriminator, WriterIdentifier, Recognizer), or
                 "deploy" (the first three), "all"; default:
                 Generator,StyleEncoder,StyleBackbone,WriterIdentifier,Recognizer
   Exit status: 0 ok, 1 unreadable input or unwritable output, 2 usage.

   Build: cc -std=c99 -O2 -Wall -Wextra -I. data_tools/export_model.c -o build/export_model -lm */
#define HIGAN_IMPLEMENTATION
#define HIGAN_STATIC
#include "higan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "Generator,Recognizer" / "deploy" / "all" -> HIGAN_NET_BIT mask; 0 on an unknown name */
static unsigned parse_nets(const char *list) {
    char buf[512], *p;
    unsigned mask = 0;
    if (!strcmp(list, "all")) return HIGAN_NETS_ALL;
    if (!strcmp(list, "deploy")) return HIGAN_NETS_DEPLOY;
    if (strlen(list) >= sizeof buf) return 0;
    strcpy(buf, list);
    for (p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        int net, found = 0;
        for (net = 0; net < HIGAN_NET_COUNT; ++net)
            if (!strcmp(p, higan_net_name(net))) { mask |= HIGAN_NET_BIT(net); found = 1; }
        if (!found) { fprintf(stderr, "export_model: unknown network '%s'\n", p); return 0; }
    }
    return mask;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    unsigned nets = HIGAN_NETS_DEPLOY | HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER) | HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER);
    higan_model m;
    int i, net;
    for (i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--nets") && i + 1 < argc) {
            if (!(nets = parse_nets(argv[++i]))) return 2;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "usage: export_model [--nets LIST] IN.safetensors OUT.safetensors\n");
            return 2;
        } else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else { fprintf(stderr, "export_model: one input and one output\n"); return 2; }
    }
    if (!in || !out) { fprintf(stderr, "usage: export_model [--nets LIST] IN.safetensors OUT.safetensors\n"); return 2; }
    memset(&m, 0, sizeof m);
    if (higan_model_load(&m, in, nets, NULL) != HIGAN_OK) {
        fprintf(stderr, "export_model: %s\n", higan_last_error());
        return 1;
    }
    if (higan_model_save(&m, out, NULL) != HIGAN_OK) {
        fprintf(stderr, "export_model: %s\n", higan_last_error());
        higan_model_free(&m);
        return 1;
    }
    printf("wrote %s:", out);
    for (net = 0; net < HIGAN_NET_COUNT; ++net)
        if (m.cfg.nets & HIGAN_NET_BIT(net))
            printf(" %s (%lld)", higan_net_name(net), (long long)higan_model_num_params(&m, net));
    printf("\n");
    higan_model_free(&m);
    return 0;
}
