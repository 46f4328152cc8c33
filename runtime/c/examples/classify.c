/* classify - print the top-k classes of binary PPM (P6) images with a semobridge model.
 *
 *   classify [--top-k K] [--scores] [--threads N] [--no-spinning] MODEL IMAGE.ppm...
 *
 * Per image:  "<path>", "  label <index> <name>", then k lines "  top <index> <score> <name>",
 * and with --scores one line "  scores <s0> <s1> ..." with every class score.
 */
#include "semobridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Next PPM header integer, skipping whitespace and # comments; -1 on error. */
static long ppm_int(FILE * f) {
    int c;
    long v = 0;
    while ((c = fgetc(f)) != EOF && (c == '#' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
        }
    }
    if (c < '0' || c > '9') return -1;
    for (; c >= '0' && c <= '9'; c = fgetc(f)) {
        v = v * 10 + (c - '0');
        if (v > 1000000) return -1;
    }
    return v; /* the single whitespace after the number is consumed */
}

/* Read a binary PPM with maxval 255; returns malloc'd RGB pixels or NULL. */
static uint8_t * read_ppm(const char * path, int * w, int * h) {
    FILE * f = fopen(path, "rb");
    uint8_t * rgb = NULL;
    if (!f) return NULL;
    if (fgetc(f) == 'P' && fgetc(f) == '6') {
        long width = ppm_int(f), height = ppm_int(f), maxval = ppm_int(f);
        size_t bytes = (size_t) width * (size_t) height * 3;
        if (width > 0 && height > 0 && maxval == 255 && (rgb = malloc(bytes)) && fread(rgb, 1, bytes, f) != bytes) {
            free(rgb);
            rgb = NULL;
        }
        *w = (int) width;
        *h = (int) height;
    }
    fclose(f);
    return rgb;
}

static int classify(struct sb_model * model, const char * path, int top_k, int print_scores) {
    int w = 0, h = 0, rc = 1;
    const int classes = sb_num_classes(model);
    uint8_t * rgb = read_ppm(path, &w, &h);
    float * scores = malloc(sizeof(float) * (size_t) classes);
    int * order = malloc(sizeof(int) * (size_t) classes);
    int64_t label = -1;
    if (!rgb) {
        fprintf(stderr, "classify: %s: not a readable binary PPM (P6, maxval 255)\n", path);
    } else if (!scores || !order) {
        fprintf(stderr, "classify: out of memory\n");
    } else if (sb_classify(model, rgb, 1, h, w, 3 * w, scores, &label) != 0) {
        fprintf(stderr, "classify: %s: %s\n", path, sb_last_error(model));
    } else {
        printf("%s\n  label %lld %s\n", path, (long long) label, sb_class_name(model, (int) label));
        for (int i = 0; i < classes; i++) order[i] = i;
        for (int k = 0; k < top_k && k < classes; k++) { /* partial selection sort, best first */
            int best = k;
            for (int i = k + 1; i < classes; i++) best = scores[order[i]] > scores[order[best]] ? i : best;
            int t = order[k]; order[k] = order[best]; order[best] = t;
            printf("  top %d %.7g %s\n", order[k], scores[order[k]], sb_class_name(model, order[k]));
        }
        if (print_scores) {
            printf("  scores");
            for (int i = 0; i < classes; i++) printf(" %.9g", scores[i]);
            printf("\n");
        }
        rc = 0;
    }
    free(rgb);
    free(scores);
    free(order);
    return rc;
}

int main(int argc, char ** argv) {
    struct sb_params params = sb_default_params();
    int top_k = 5, print_scores = 0, i = 1, failures = 0;
    char err[512];
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--scores") == 0) print_scores = 1;
        else if (strcmp(argv[i], "--top-k") == 0 && i + 1 < argc) top_k = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) params.intra_op_num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-spinning") == 0) params.allow_spinning = false;
        else break;
    }
    if (argc - i < 2 || top_k < 1) {
        fprintf(stderr, "usage: %s [--top-k K] [--scores] [--threads N] [--no-spinning] MODEL IMAGE.ppm...\n", argv[0]);
        return 2;
    }
    struct sb_model * model = sb_open_with_error(argv[i], params, err, sizeof err);
    if (!model) {
        fprintf(stderr, "classify: %s\n", err);
        return 1;
    }
    for (i++; i < argc; i++) failures += classify(model, argv[i], top_k, print_scores);
    sb_close(model);
    return failures ? 1 : 0;
}
