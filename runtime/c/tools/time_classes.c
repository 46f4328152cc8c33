/* time_classes - what class sets cost in the C library (benchmarks/classes.py runs it).
 *
 *   time_classes [--iters N] [--loads N] [--threads N] MODEL CLASSFILE
 *
 * Times sb_set_classes(MODEL, CLASSFILE) (--loads times, default 50, each after returning to the fitted classes), and
 * sb_classify_with on one 224x224 image (batch 1) with the fitted classes (fed nothing: the graph's defaults) and with
 * the file's class set (fed as the graph's inputs), the two in turns (--iters calls each, default 60). ONNX Runtime
 * threads sleep between calls (allow_spinning false), as in the Python benchmarks. Prints one JSON object of medians.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "semobridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec * 1e3 + (double) t.tv_nsec / 1e6;
}

static int by_value(const void * a, const void * b) {
    const double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static double median(double * v, int n) {
    qsort(v, (size_t) n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int fail(struct sb_model * m, const char * what) {
    fprintf(stderr, "time_classes: %s: %s\n", what, sb_last_error(m));
    sb_close(m);
    return 1;
}

int main(int argc, char ** argv) {
    int iters = 60, loads = 50, i = 1;
    struct sb_params params = sb_default_params();
    params.allow_spinning = false;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--loads") == 0) loads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0) params.intra_op_num_threads = atoi(argv[i + 1]);
    }
    if (argc - i != 2 || iters < 1 || loads < 1) {
        fprintf(stderr, "usage: time_classes [--iters N] [--loads N] [--threads N] MODEL CLASSFILE\n");
        return 2;
    }
    char err[512];
    struct sb_model * m = NULL;
    if (sb_load(argv[i], params, &m, err, sizeof err) != SB_OK) {
        fprintf(stderr, "time_classes: %s\n", err);
        return 1;
    }
    double * load_ms = malloc(sizeof(double) * (size_t) loads);
    double * fitted_ms = malloc(sizeof(double) * (size_t) iters);
    double * set_ms = malloc(sizeof(double) * (size_t) iters);
    for (int k = 0; k < loads; k++) {
        const double start = now_ms();
        if (sb_set_classes(m, argv[i + 1]) != SB_OK) return fail(m, "sb_set_classes");
        load_ms[k] = now_ms() - start;
        sb_set_classes(m, NULL);
    }
    struct sb_classes * fitted = sb_get_classes(m);
    sb_set_classes(m, argv[i + 1]);
    struct sb_classes * set = sb_get_classes(m);
    const int most = sb_classes_count(fitted) > sb_classes_count(set) ? sb_classes_count(fitted) : sb_classes_count(set);
    float * scores = malloc(sizeof(float) * (size_t) most);
    uint8_t * image = malloc(224 * 224 * 3);
    int64_t label;
    for (size_t k = 0; k < 224 * 224 * 3; k++) image[k] = (uint8_t) ((k * 2654435761u) >> 24);
    for (int k = -3; k < iters; k++) { /* 3 warm-up calls each; then in turns, alternating which goes first */
        for (int which = 0; which < 2; which++) {
            struct sb_classes * c = (which ^ (k & 1)) ? set : fitted;
            const double start = now_ms();
            if (sb_classify_with(m, c, image, 1, 224, 224, 3 * 224, scores, &label) != SB_OK) return fail(m, "sb_classify");
            if (k >= 0) (c == set ? set_ms : fitted_ms)[k] = now_ms() - start;
        }
    }
    const double fitted_p50 = median(fitted_ms, iters), set_p50 = median(set_ms, iters);
    printf("{\"classes\": %d, \"fitted_classes\": %d, \"embedding_dim\": %d, \"loads\": %d, \"iters\": %d, "
           "\"set_classes_ms\": %.4f, \"classify_fitted_ms\": %.4f, \"classify_set_ms\": %.4f, \"set_over_fitted\": %.5f}\n",
           sb_classes_count(set), sb_classes_count(fitted), sb_embedding_dim(m), loads, iters, median(load_ms, loads),
           fitted_p50, set_p50, set_p50 / fitted_p50);
    sb_release_classes(fitted);
    sb_release_classes(set);
    sb_close(m);
    free(load_ms);
    free(fitted_ms);
    free(set_ms);
    free(scores);
    free(image);
    return 0;
}
