/* test_errors - every bad input to the semobridge C API fails cleanly with a message.
 *
 *   test_errors MODEL FLOAT_MODEL NOT_OURS_MODEL TRUNCATED_MODEL MISSING_PATH
 *
 * Prints "ok <case>: <message>" or "FAIL <case>: ..." per case; exits 1 if any failed.
 */
#include "semobridge.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

static void expect(int ok, const char * name, const char * message) {
    printf("%s %s: %s\n", ok ? "ok" : "FAIL", name, message ? message : "(null)");
    failures += !ok;
}

/* sb_load(path) must fail with `code`, leave the model NULL and write a message containing `needle`. */
static void expect_open_fails(const char * name, const char * path, struct sb_params params, int code,
                              const char * needle) {
    char err[512] = "unchanged";
    struct sb_model * m = (struct sb_model *) &failures; /* sb_load must reset it */
    int rc = sb_load(path, params, &m, err, sizeof err);
    expect(rc == code && m == NULL && strstr(err, needle) != NULL, name, err);
}

/* A call on model m must return `code` and leave a non-empty message. */
static void expect_call_fails(struct sb_model * m, const char * name, int rc, int code) {
    const char * msg = sb_last_error(m);
    expect(rc == code && msg[0] != '\0', name, msg);
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL FLOAT_MODEL NOT_OURS TRUNCATED MISSING\n", argv[0]);
        return 2;
    }
    struct sb_params params = sb_default_params();
    static uint8_t rgb[4 * 8 * 8 * 3];
    float scores[4 * 64], emb[4 * 1024];
    int64_t labels[4];
    char small[8];

    expect(strcmp(sb_version(), SB_VERSION) == 0, "sb_version is SB_VERSION", sb_version());
    expect_open_fails("open NULL path", NULL, params, SB_EINVAL, "NULL");
    expect_open_fails("open missing file", argv[5], params, SB_EMODEL, "cannot open");
    expect_open_fails("open a directory", ".", params, SB_EMODEL, "is a directory");
    expect_open_fails("open truncated file", argv[4], params, SB_EMODEL, "cannot load");
    expect_open_fails("open model that is not ours", argv[3], params, SB_EMODEL, "not a semobridge export");
    struct sb_params bad = params;
    bad.intra_op_num_threads = -1;
    expect_open_fails("open with negative threads", argv[1], bad, SB_EINVAL, "thread");
    bad.intra_op_num_threads = SB_MAX_THREADS + 1;
    expect_open_fails("open with 257 threads", argv[1], bad, SB_EINVAL, "thread counts must be 0..256");
    bad = params;
    bad.inter_op_num_threads = 100000;
    expect_open_fails("open with 100000 inter-op threads", argv[1], bad, SB_EINVAL, "inter_op_num_threads=100000");
    bad = params;
    bad.max_aspect = NAN;
    expect_open_fails("open with max_aspect NaN", argv[1], bad, SB_EINVAL, "max_aspect");
    bad = params;
    bad.max_pixels = -1;
    expect_open_fails("open with negative max_pixels", argv[1], bad, SB_EINVAL, "max_pixels");
    char err0[64] = "unchanged";
    expect(sb_load(argv[1], params, NULL, err0, sizeof err0) == SB_EINVAL && strstr(err0, "NULL"), "load into NULL", err0);
    expect(sb_open(argv[5], params) == NULL, "sb_open returns NULL", "");
    expect(sb_open_with_error(argv[5], params, small, sizeof small) == NULL && strlen(small) == 7,
           "error truncated to errlen", small);

    struct sb_params cuda = params;
    cuda.use_cuda = true;
    char err[512] = "";
    struct sb_model * m = sb_open_with_error(argv[1], cuda, err, sizeof err);
    expect(m != NULL || strstr(err, "CUDA") != NULL, "use_cuda fails cleanly without the CUDA EP",
           m ? "(CUDA available)" : err);
    sb_close(m);

    m = sb_open_with_error(argv[1], params, err, sizeof err);
    if (!m) {
        printf("FAIL open good model: %s\n", err);
        return 1;
    }
    expect(sb_class_name(m, -1) == NULL && sb_class_name(m, sb_num_classes(m)) == NULL,
           "class name out of range is NULL", "");
    expect(sb_num_classes(NULL) == -1 && sb_embedding_dim(NULL) == -1 && sb_class_name(NULL, 0) == NULL &&
           sb_last_error(NULL) != NULL, "getters accept NULL model", sb_last_error(NULL));
    expect(sb_classify(NULL, rgb, 1, 8, 8, 24, scores, labels) == SB_EINVAL, "classify NULL model", "");
    expect_call_fails(m, "classify NULL rgb", sb_classify(m, NULL, 1, 8, 8, 24, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify NULL scores", sb_classify(m, rgb, 1, 8, 8, 24, NULL, labels), SB_EINVAL);
    expect_call_fails(m, "classify NULL labels", sb_classify(m, rgb, 1, 8, 8, 24, scores, NULL), SB_EINVAL);
    expect_call_fails(m, "classify n=0", sb_classify(m, rgb, 0, 8, 8, 24, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify h=0", sb_classify(m, rgb, 1, 0, 8, 24, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify w<0", sb_classify(m, rgb, 1, 8, -3, 24, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify stride < 3w", sb_classify(m, rgb, 1, 8, 8, 23, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify huge w", sb_classify(m, rgb, 1, 1, INT_MAX, INT_MAX, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify h = INT_MAX", sb_classify(m, rgb, 1, INT_MAX, 1, 3, scores, labels), SB_EINVAL);
    expect(strstr(sb_last_error(m), "longest side 2147483647 exceeds the limit of 16384") != NULL,
           "h = INT_MAX names the limit", sb_last_error(m));
    expect_call_fails(m, "classify 1 x 1000000", sb_classify(m, rgb, 1, 1, 1000000, 3000000, scores, labels), SB_EINVAL);
    expect_call_fails(m, "classify 10 x 330", sb_classify(m, rgb, 1, 10, 330, 990, scores, labels), SB_EINVAL);
    expect(strstr(sb_last_error(m), "aspect ratio 33:1 exceeds the limit of 32:1") && strstr(sb_last_error(m), "max_aspect"),
           "aspect ratio names the limit and how to raise it", sb_last_error(m));
    expect_call_fails(m, "classify 8193 x 8192", sb_classify(m, rgb, 1, 8193, 8192, 3 * 8192, scores, labels), SB_EINVAL);
    expect(strstr(sb_last_error(m), "67117056 pixels exceed the limit of 67108864") != NULL,
           "pixel count names the limit", sb_last_error(m));
    expect_call_fails(m, "classify n*h*stride overflow",
                      sb_classify(m, rgb, INT_MAX, INT_MAX, INT_MAX / 3, INT_MAX, scores, labels), SB_EINVAL);
    expect_call_fails(m, "embed NULL out", sb_embed(m, rgb, 1, 8, 8, 24, NULL), SB_EINVAL);
    expect_call_fails(m, "embed n<0", sb_embed(m, rgb, -1, 8, 8, 24, emb), SB_EINVAL);
    expect(sb_classify(m, rgb, 4, 8, 8, 24, scores, labels) == SB_OK, "classify still works after errors", "");
    expect(sb_embed(m, rgb, 2, 8, 8, 24, emb) == SB_OK, "embed works", "");
    sb_close(m);

    struct sb_params raised = params; /* limits raised so far that only the size arithmetic can refuse */
    raised.max_side = INT_MAX;
    raised.max_pixels = INT64_MAX;
    raised.max_aspect = 64;
    m = sb_open_with_error(argv[1], raised, err, sizeof err);
    expect(m != NULL, "open with raised limits", err);
    if (m) {
        expect(sb_classify(m, rgb, 1, 1, 40, 120, scores, labels) == SB_OK, "1 x 40 within a raised max_aspect",
               sb_last_error(m));
        expect_call_fails(m, "classify n*h*w overflow with raised limits",
                          sb_classify(m, rgb, INT_MAX, 1 << 30, 1 << 28, 3 << 28, scores, labels), SB_EINVAL);
        expect(strstr(sb_last_error(m), "overflows") != NULL, "overflow message", sb_last_error(m));
    }
    sb_close(m);

    m = sb_open_with_error(argv[2], params, err, sizeof err);
    if (!m) {
        printf("FAIL open float model: %s\n", err);
        return 1;
    }
    expect_call_fails(m, "classify on float model", sb_classify(m, rgb, 1, 8, 8, 24, scores, labels), SB_EMODEL);
    expect(strstr(sb_last_error(m), "float") != NULL, "float model message names the fix", sb_last_error(m));
    expect_call_fails(m, "embed on float model", sb_embed(m, rgb, 1, 8, 8, 24, emb), SB_EMODEL);
    sb_close(m);
    sb_close(NULL);
    return failures ? 1 : 0;
}
