/* test_classes - class sets in the semobridge C API: swaps, refusals that keep the old set, concurrent readers.
 *
 *   test_classes [--threads T] [--calls N] MODEL A.classes B.classes [BAD.classes...]
 *
 * MODEL takes its class set as data; A and B are valid class files for it with different names and values.
 * Checks, printing "ok <case>: ..." or "FAIL <case>: ...":
 *   - opening with sb_params.classes_path, sb_set_classes to A, B and back to the fitted classes (NULL), and that
 *     sb_classify and sb_classify_with give the same results;
 *   - every BAD file is refused by sb_set_classes (printed as "refused <code> <path>: <message>" for the caller to
 *     check), and the set in use stays A: same names, same scores bit for bit; the first BAD also by sb_load;
 *   - NULL arguments and a class set of another model;
 *   - T threads (default 8) classify N times each (default 50) while the main thread swaps A, B and the fitted
 *     classes as fast as it can: every result equals, bit for bit, the result of the fitted set, A or B computed
 *     before (sb_classify, whose scores buffer fits the largest set, and sb_classify_with on a set held across two
 *     swaps).
 * Exits 1 if any check failed.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "semobridge.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_IMAGES 3
#define H 24
#define W 20
#define MAX_NAMES 64

static int failures = 0;

static void expect(int ok, const char * name, const char * message) {
    printf("%s %s: %s\n", ok ? "ok" : "FAIL", name, message ? message : "(null)");
    fflush(stdout);
    failures += !ok;
}

/* What one class set gives on the test images. */
struct expected {
    const char * label;
    int count;
    char * names[MAX_NAMES];
    float * scores; /* N_IMAGES * count */
    int64_t labels[N_IMAGES];
};

static uint8_t images[N_IMAGES * H * W * 3];
static struct sb_model * model;
static struct expected sets[3]; /* the fitted classes, A, B */
static int max_count;
static int calls = 50;
static atomic_int done_threads;
static atomic_int seen[3];
static atomic_int mismatches;
static atomic_long swaps_done;

/* Snapshot the current set's names and results. */
static void record(struct expected * e, const char * label) {
    struct sb_classes * c = sb_get_classes(model);
    e->label = label;
    e->count = sb_classes_count(c);
    if (e->count > MAX_NAMES) e->count = MAX_NAMES;
    for (int i = 0; i < e->count; i++) e->names[i] = strdup(sb_classes_name(c, i));
    e->scores = malloc(sizeof(float) * N_IMAGES * (size_t) e->count);
    int rc = sb_classify_with(model, c, images, N_IMAGES, H, W, 3 * W, e->scores, e->labels);
    expect(rc == SB_OK, "classify with a held set", label);
    float * again = malloc(sizeof(float) * N_IMAGES * (size_t) e->count);
    int64_t labels[N_IMAGES];
    rc = sb_classify(model, images, N_IMAGES, H, W, 3 * W, again, labels);
    expect(rc == SB_OK && memcmp(again, e->scores, sizeof(float) * N_IMAGES * (size_t) e->count) == 0 &&
           memcmp(labels, e->labels, sizeof labels) == 0, "sb_classify equals sb_classify_with", label);
    free(again);
    sb_release_classes(c);
}

/* Does the current set (names through the model's getters) and its results equal e, bit for bit? */
static int current_is(const struct expected * e) {
    float scores[N_IMAGES * MAX_NAMES];
    int64_t labels[N_IMAGES];
    if (sb_num_classes(model) != e->count) return 0;
    for (int i = 0; i < e->count; i++) {
        if (strcmp(sb_class_name(model, i), e->names[i]) != 0) return 0;
    }
    return sb_classify(model, images, N_IMAGES, H, W, 3 * W, scores, labels) == SB_OK &&
           memcmp(scores, e->scores, sizeof(float) * N_IMAGES * (size_t) e->count) == 0 &&
           memcmp(labels, e->labels, sizeof labels) == 0;
}

/* Which set gave these results (sb_classify into a NaN-filled buffer of max_count per image), or -1. */
static int which(const float * scores, const int64_t * labels) {
    for (int s = 0; s < 3; s++) {
        const int count = sets[s].count;
        int same = memcmp(labels, sets[s].labels, sizeof sets[s].labels) == 0;
        for (int i = 0; same && i < N_IMAGES; i++) { /* each image's scores lie at i * count */
            same = memcmp(scores + (size_t) i * (size_t) count, sets[s].scores + (size_t) i * (size_t) count,
                          sizeof(float) * (size_t) count) == 0;
        }
        for (size_t i = (size_t) N_IMAGES * (size_t) count; same && i < (size_t) N_IMAGES * (size_t) max_count; i++) {
            same = isnan(scores[i]); /* nothing written beyond the set's scores */
        }
        if (same) return s;
    }
    return -1;
}

static void * reader(void * arg) {
    const size_t capacity = (size_t) N_IMAGES * (size_t) max_count;
    float * scores = malloc(sizeof(float) * capacity);
    int64_t labels[N_IMAGES];
    (void) arg;
    for (int k = 0; k < calls; k++) {
        int s = -1;
        if (k % 2 == 0) { /* the current set, whichever it is when the call begins */
            for (size_t i = 0; i < capacity; i++) scores[i] = NAN;
            if (sb_classify(model, images, N_IMAGES, H, W, 3 * W, scores, labels) == SB_OK) s = which(scores, labels);
        } else { /* a held set, kept while the model's set is swapped twice: its names, count and scores stay */
            const long before = atomic_load(&swaps_done);
            struct sb_classes * c = sb_get_classes(model);
            while (atomic_load(&swaps_done) < before + 2) sched_yield();
            for (int t = 0; t < 3 && s < 0; t++) {
                int same = sb_classes_count(c) == sets[t].count;
                for (int i = 0; same && i < sets[t].count; i++) same = strcmp(sb_classes_name(c, i), sets[t].names[i]) == 0;
                if (same) s = t;
            }
            if (s >= 0 && (sb_classify_with(model, c, images, N_IMAGES, H, W, 3 * W, scores, labels) != SB_OK ||
                           memcmp(scores, sets[s].scores, sizeof(float) * N_IMAGES * (size_t) sets[s].count) != 0 ||
                           memcmp(labels, sets[s].labels, sizeof labels) != 0)) {
                s = -1;
            }
            sb_release_classes(c);
        }
        if (s < 0) atomic_fetch_add(&mismatches, 1);
        else atomic_fetch_add(&seen[s], 1);
    }
    free(scores);
    atomic_fetch_add(&done_threads, 1);
    return NULL;
}

static void concurrent(const char * a, const char * b, int threads) {
    pthread_t * ids = malloc(sizeof(pthread_t) * (size_t) threads);
    const char * order[3] = {a, b, NULL};
    long swaps = 0;
    int started = 0, swap_failures = 0;
    for (; started < threads; started++) {
        if (pthread_create(&ids[started], NULL, reader, NULL) != 0) break;
    }
    expect(started == threads, "start the reader threads", "");
    while (atomic_load(&done_threads) < started) {
        swap_failures += sb_set_classes(model, order[swaps++ % 3]) != SB_OK;
        atomic_store(&swaps_done, swaps);
    }
    for (int i = 0; i < started; i++) pthread_join(ids[i], NULL);
    free(ids);
    char line[200];
    snprintf(line, sizeof line, "%d calls: %d fitted, %d A, %d B, %d mismatched; %ld swaps", started * calls,
             atomic_load(&seen[0]), atomic_load(&seen[1]), atomic_load(&seen[2]), atomic_load(&mismatches), swaps);
    printf("concurrent %d %d %d %d %ld\n", atomic_load(&seen[0]), atomic_load(&seen[1]), atomic_load(&seen[2]),
           atomic_load(&mismatches), swaps);
    expect(atomic_load(&mismatches) == 0 && swap_failures == 0, "every concurrent result is one whole set's", line);
}

int main(int argc, char ** argv) {
    int threads = 8, i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--calls") == 0) calls = atoi(argv[i + 1]);
    }
    if (argc - i < 3 || threads < 1 || calls < 1) {
        fprintf(stderr, "usage: %s [--threads T] [--calls N] MODEL A.classes B.classes [BAD.classes...]\n", argv[0]);
        return 2;
    }
    const char * path = argv[i], * a = argv[i + 1], * b = argv[i + 2];
    char ** bad = argv + i + 3;
    const int nbad = argc - i - 3;
    for (size_t k = 0; k < sizeof images; k++) images[k] = (uint8_t) ((k * 7919u + k / 97u) % 251u);

    struct sb_params params = sb_default_params();
    char err[512] = "";
    params.classes_path = a;
    int rc = sb_load(path, params, &model, err, sizeof err);
    expect(rc == SB_OK, "open with params.classes_path", err);
    if (rc != SB_OK) return 1;
    record(&sets[1], "A");
    expect(sb_set_classes(model, b) == SB_OK, "set B", sb_last_error(model));
    record(&sets[2], "B");
    expect(sb_set_classes(model, NULL) == SB_OK, "back to the fitted classes", sb_last_error(model));
    record(&sets[0], "fitted");
    expect(sets[1].count != sets[0].count && strcmp(sets[1].names[0], sets[2].names[0]) != 0 &&
           memcmp(sets[1].scores, sets[2].scores, sizeof(float) * (size_t) sets[1].count) != 0,
           "the three sets differ", "");
    for (int s = 0; s < 3; s++) max_count = sets[s].count > max_count ? sets[s].count : max_count;

    expect(sb_set_classes(model, a) == SB_OK && current_is(&sets[1]), "set A again", sb_last_error(model));
    for (int k = 0; k < nbad; k++) {
        rc = sb_set_classes(model, bad[k]);
        printf("refused %d %s: %s\n", rc, bad[k], sb_last_error(model));
        expect(rc < 0 && current_is(&sets[1]), "a refused file keeps the set", bad[k]);
    }
    if (nbad > 0) {
        struct sb_model * other = NULL;
        params.classes_path = bad[0];
        rc = sb_load(path, params, &other, err, sizeof err);
        printf("open-refused %d %s: %s\n", rc, bad[0], err);
        expect(rc < 0 && other == NULL, "sb_load refuses a bad classes_path", err);
    }

    expect(sb_set_classes(NULL, a) == SB_EINVAL && sb_get_classes(NULL) == NULL && sb_classes_count(NULL) == -1 &&
           sb_classes_name(NULL, 0) == NULL, "NULL model and set", "");
    struct sb_classes * held = sb_get_classes(model);
    float scores[N_IMAGES * MAX_NAMES];
    int64_t labels[N_IMAGES];
    expect(sb_classes_name(held, -1) == NULL && sb_classes_name(held, sb_classes_count(held)) == NULL,
           "set name out of range is NULL", "");
    expect(sb_classify_with(model, NULL, images, N_IMAGES, H, W, 3 * W, scores, labels) == SB_EINVAL &&
           strstr(sb_last_error(model), "NULL"), "classify with a NULL set", sb_last_error(model));
    expect(sb_classify_with(NULL, held, images, N_IMAGES, H, W, 3 * W, scores, labels) == SB_EINVAL,
           "classify with a NULL model", "");
    expect(sb_set_classes(model, b) == SB_OK && sb_classes_count(held) == sets[1].count &&
           strcmp(sb_classes_name(held, 0), sets[1].names[0]) == 0, "a held set outlives a swap", "");
    struct sb_model * other = NULL;
    params.classes_path = NULL;
    rc = sb_load(path, params, &other, err, sizeof err);
    struct sb_classes * foreign = other ? sb_get_classes(other) : NULL;
    expect(foreign && sb_classify_with(model, foreign, images, N_IMAGES, H, W, 3 * W, scores, labels) == SB_EINVAL &&
           strstr(sb_last_error(model), "another model"), "classify with another model's set", sb_last_error(model));
    sb_close(other);
    expect(sb_classes_count(foreign) == sets[0].count && strcmp(sb_classes_name(foreign, 0), sets[0].names[0]) == 0,
           "a set released after its model is closed", "");
    sb_release_classes(foreign);
    sb_release_classes(held);
    sb_release_classes(NULL);

    concurrent(a, b, threads);
    expect(sb_set_classes(model, NULL) == SB_OK && current_is(&sets[0]), "the fitted classes at the end", "");
    sb_close(model);
    for (int s = 0; s < 3; s++) {
        for (int k = 0; k < sets[s].count; k++) free(sets[s].names[k]);
        free(sets[s].scores);
    }
    return failures ? 1 : 0;
}
