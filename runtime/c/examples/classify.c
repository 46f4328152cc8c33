/* classify - print the top-k classes of binary PPM (P6) images with a semobridge model.
 *
 *   classify [--top-k K] [--scores] [--probabilities] [--open-set-score] [--unknown auto|off|VALUE] [--classes FILE]
 *            [--threads N] [--no-spinning] [--version] MODEL IMAGE.ppm...
 *
 * Per image:  "<path>", "  label <index> <name>" ("  label -1 unknown" for an image of no enrolled class), then k
 * lines "  top <index> <score> <name>", with --scores one line "  scores <s0> <s1> ..." with every class score,
 * with --probabilities one line "  probabilities <p0> <p1> ..." (calibrated, summing to 1), and with --open-set-score
 * one line "  open_set_score <value> <score> <threshold>": the value of the model's open-set score (max_probability or
 * mcm) the image is called unknown on, below the threshold (-1: unknown is off).
 * Exit codes (docs/errors.md): 0 ok, 2 input error, 3 model error, 4 runtime error; with several
 * images, the first failure's.
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

/* Read a binary PPM with maxval 255 and at most SB_MAX_PIXELS pixels; returns malloc'd RGB pixels or NULL. */
static uint8_t * read_ppm(const char * path, int * w, int * h) {
    FILE * f = fopen(path, "rb");
    uint8_t * rgb = NULL;
    if (!f) return NULL;
    if (fgetc(f) == 'P' && fgetc(f) == '6') {
        long width = ppm_int(f), height = ppm_int(f), maxval = ppm_int(f);
        size_t bytes = (size_t) width * (size_t) height * 3;
        if (width > 0 && height > 0 && (long long) width * height <= SB_MAX_PIXELS && maxval == 255 && (rgb = malloc(bytes)) &&
            fread(rgb, 1, bytes, f) != bytes) {
            free(rgb);
            rgb = NULL;
        }
        *w = (int) width;
        *h = (int) height;
    }
    fclose(f);
    return rgb;
}

/* The exit code of an SB_E* code: input error 2, model error 3, runtime error 4. */
static int exit_code(int rc) { return rc == SB_EINVAL ? 2 : rc == SB_EMODEL ? 3 : 4; }

/* Classify one image and print its classes; returns 0 or an exit code. */
static int classify(struct sb_model * model, const char * path, int top_k, int print_scores, int print_probabilities,
                    int print_open_set) {
    int w = 0, h = 0, rc = 2, status;
    struct sb_classes * set = sb_get_classes(model); /* one class set for the scores and the names */
    const int classes = sb_classes_count(set);
    uint8_t * rgb = read_ppm(path, &w, &h);
    float * scores = malloc(sizeof(float) * (size_t) classes);
    float * probabilities = malloc(sizeof(float) * (size_t) classes);
    int * order = malloc(sizeof(int) * (size_t) classes);
    int64_t label = -1;
    float open_set_score = 0;
    struct sb_frame frame = sb_default_frame(); /* packed RGB */
    frame.data[0] = rgb;
    frame.size[0] = (size_t) w * (size_t) h * 3;
    frame.width = w;
    frame.height = h;
    const struct sb_result result = {.scores = scores, .labels = &label,
                                     .probabilities = print_probabilities ? probabilities : NULL,
                                     .open_set_score = print_open_set ? &open_set_score : NULL};
    if (!rgb) {
        fprintf(stderr, "classify: %s: not a readable binary PPM (P6, maxval 255, at most %lld pixels)\n", path,
                (long long) SB_MAX_PIXELS);
    } else if (!scores || !probabilities || !order) {
        fprintf(stderr, "classify: out of memory\n");
        rc = 4;
    } else if ((status = sb_predict(model, set, &frame, 1, &result)) != SB_OK) {
        fprintf(stderr, "classify: %s: %s\n", path, sb_last_error(model));
        rc = exit_code(status);
    } else {
        printf("%s\n  label %lld %s\n", path, (long long) label, label < 0 ? "unknown" : sb_classes_name(set, (int) label));
        for (int i = 0; i < classes; i++) order[i] = i;
        for (int k = 0; k < top_k && k < classes; k++) { /* partial selection sort, best first */
            int best = k;
            for (int i = k + 1; i < classes; i++) best = scores[order[i]] > scores[order[best]] ? i : best;
            int t = order[k]; order[k] = order[best]; order[best] = t;
            printf("  top %d %.7g %s\n", order[k], scores[order[k]], sb_classes_name(set, order[k]));
        }
        if (print_scores) {
            printf("  scores");
            for (int i = 0; i < classes; i++) printf(" %.9g", scores[i]);
            printf("\n");
        }
        if (print_probabilities) {
            printf("  probabilities");
            for (int i = 0; i < classes; i++) printf(" %.9g", probabilities[i]);
            printf("\n");
        }
        if (print_open_set) {
            printf("  open_set_score %.9g %s %.9g\n", open_set_score, sb_unknown_score(model),
                   sb_unknown_threshold(model));
        }
        rc = 0;
    }
    sb_release_classes(set);
    free(rgb);
    free(scores);
    free(probabilities);
    free(order);
    return rc;
}

static const char usage[] =
    "usage: classify [--top-k K] [--scores] [--probabilities] [--open-set-score] [--unknown auto|off|VALUE]\n"
    "                [--classes FILE] [--threads N] [--no-spinning] [--version] MODEL IMAGE.ppm...\n"
    "  --top-k K      classes to print per image (default 5)\n"
    "  --scores       also print every class score\n"
    "  --probabilities also print every class's calibrated probability\n"
    "  --open-set-score also print the open-set score unknown is decided on, its name and the threshold\n"
    "  --unknown auto|off|VALUE  label -1 (unknown) below the model's calibrated threshold (auto, the default), never\n"
    "                 (off), or below VALUE in [0, 1], on the model's open-set score (--open-set-score)\n"
    "  --classes FILE a class file (semobridge-classes, Classifier.save_classes) instead of the fitted classes\n"
    "  --threads N    ONNX Runtime intra-op threads, 0..256 (default 0: one per core)\n"
    "  --no-spinning  let ONNX Runtime's threads sleep between calls instead of spinning\n"
    "  --version      print the library version\n"
    "exit codes: 0 ok, 2 input error, 3 model error, 4 runtime error\n";

int main(int argc, char ** argv) {
    struct sb_params params = sb_default_params();
    struct sb_model * model = NULL;
    int top_k = 5, print_scores = 0, print_probabilities = 0, print_open_set = 0, i = 1, failure = 0, rc;
    char err[512];
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--scores") == 0) print_scores = 1;
        else if (strcmp(argv[i], "--probabilities") == 0) print_probabilities = 1;
        else if (strcmp(argv[i], "--open-set-score") == 0) print_open_set = 1;
        else if (strcmp(argv[i], "--unknown") == 0 && i + 1 < argc) {
            const char * value = argv[++i];
            char * end = NULL;
            if (strcmp(value, "auto") == 0) params.unknown = SB_UNKNOWN_AUTO;
            else if (strcmp(value, "off") == 0) params.unknown = SB_UNKNOWN_OFF;
            else {
                params.unknown = SB_UNKNOWN_THRESHOLD;
                params.unknown_threshold = strtod(value, &end);
                if (end == value || *end) {
                    fprintf(stderr, "classify: --unknown %s is not auto, off or a number in [0, 1]\n", value);
                    return 2;
                }
            }
        }
        else if (strcmp(argv[i], "--top-k") == 0 && i + 1 < argc) top_k = atoi(argv[++i]);
        else if (strcmp(argv[i], "--classes") == 0 && i + 1 < argc) params.classes_path = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) params.intra_op_num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-spinning") == 0) params.allow_spinning = false;
        else if (strcmp(argv[i], "--version") == 0) {
            printf("classify (semobridge %s)\n", sb_version());
            return 0;
        }
        else break;
    }
    if (argc - i < 2 || top_k < 1) {
        fputs(usage, stderr);
        return 2;
    }
    if ((rc = sb_load(argv[i], params, &model, err, sizeof err)) != SB_OK) {
        fprintf(stderr, "classify: %s\n", err);
        return exit_code(rc);
    }
    for (i++; i < argc; i++) {
        rc = classify(model, argv[i], top_k, print_scores, print_probabilities, print_open_set);
        failure = failure ? failure : rc;
    }
    sb_close(model);
    return failure;
}
