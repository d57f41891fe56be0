// The header must compile as C++ (g++ and nvcc's host compile): instantiate it here and
// run one op so the link is exercised too.
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include <cstdio>

int main() {
    higan_arena arena;
    higan_tape tape;
    int64_t shape[2] = {2, 3};
    float x[6] = {1, 2, 3, 4, 5, 6};
    if (higan_arena_init(&arena, 1 << 16) != HIGAN_OK || higan_tape_init(&tape, &arena, 16) != HIGAN_OK) return 1;
    higan_var *v = higan_var_wrap(&tape, x, 2, shape);
    int ok = v != NULL && higan_var_numel(v) == 6;
    std::printf("%s C++ compile and link of higan.h %s\n", ok ? "PASS" : "FAIL", HIGAN_VERSION_STRING);
    std::printf("RESULT %d %d\n", ok, !ok);
    higan_tape_free(&tape);
    higan_arena_free(&arena);
    return ok ? 0 : 1;
}
