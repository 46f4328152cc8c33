/* test_errors - every bad input to the semobridge C API fails cleanly with a message.
 *
 *   test_errors MODEL FLOAT_MODEL NOT_OURS_MODEL TRUNCATED_MODEL MISSING_PATH
 *
 * Prints "ok <case>: <message>" or "FAIL <case>: ..." per case; exits 1 if any failed.
 */
#include "semobridge.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
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

/* A frame call on model m must return SB_EINVAL with a message containing `needle`. */
static void expect_frame_fails(struct sb_model * m, const char * name, int rc, const char * needle) {
    const char * msg = sb_last_error(m);
    expect(rc == SB_EINVAL && strstr(msg, needle) != NULL, name, msg);
}

/* Bad frames (struct sb_frame) are refused with SB_EINVAL and a message naming the problem, before any pixel is read. */
static void frame_cases(struct sb_model * m, float * scores, int64_t * labels, float * emb) {
    static uint8_t pixels[16 * 8 * 4];
    struct sb_frame nv12 = sb_default_frame(), rgb = sb_default_frame(), f[2];
    char err[512] = "";
    nv12.layout = SB_LAYOUT_NV12;
    nv12.width = nv12.height = 8;
    nv12.data[0] = pixels;
    nv12.data[1] = pixels + 64;
    nv12.size[0] = 64;
    nv12.size[1] = 32;
    rgb.width = rgb.height = 8;
    rgb.data[0] = pixels;
    rgb.size[0] = 8 * 8 * 3;
    expect(sb_classify_frames(m, &nv12, 1, scores, labels) == SB_OK, "classify an NV12 frame", sb_last_error(m));
    f[0] = rgb;
    f[1] = nv12;
    expect(sb_classify_frames(m, f, 2, scores, labels) == SB_OK, "classify frames of two layouts", sb_last_error(m));
    expect(sb_embed_frames(m, f, 2, emb) == SB_OK, "embed frames", sb_last_error(m));
    expect(sb_classify_frames(NULL, &rgb, 1, scores, labels) == SB_EINVAL, "frames on a NULL model", "");
    expect_frame_fails(m, "frames NULL", sb_classify_frames(m, NULL, 1, scores, labels), "frames is NULL");
    expect_frame_fails(m, "frames n=0", sb_classify_frames(m, &rgb, 0, scores, labels), "n must be > 0");
    expect_frame_fails(m, "frames NULL scores", sb_classify_frames(m, &rgb, 1, NULL, labels), "must not be NULL");
    expect_frame_fails(m, "embed frames NULL out", sb_embed_frames(m, &rgb, 1, NULL), "emb_out");
    expect_frame_fails(m, "frames with a NULL set", sb_classify_frames_with(m, NULL, &rgb, 1, scores, labels),
                       "classes is NULL");
    f[0] = rgb;
    f[0].layout = (enum sb_layout) 99;
    expect_frame_fails(m, "frame layout 99", sb_classify_frames(m, f, 1, scores, labels), "layout 99");
    f[0] = rgb;
    f[0].width = -8;
    expect_frame_fails(m, "frame width < 0", sb_classify_frames(m, f, 1, scores, labels), "must be > 0");
    f[0] = rgb;
    f[0].data[0] = NULL;
    expect_frame_fails(m, "frame data NULL", sb_classify_frames(m, f, 1, scores, labels), "data[0] is NULL");
    f[0] = nv12;
    f[0].data[1] = NULL;
    expect_frame_fails(m, "NV12 UV plane NULL", sb_classify_frames(m, f, 1, scores, labels), "UV plane) is NULL");
    f[0] = rgb;
    f[0].stride[0] = 23;
    expect_frame_fails(m, "RGB stride < 3w", sb_classify_frames(m, f, 1, scores, labels), "stride[0]=23 is smaller");
    f[0] = rgb;
    f[0].layout = SB_LAYOUT_BGRA;
    f[0].stride[0] = 24;
    expect_frame_fails(m, "BGRA stride < 4w", sb_classify_frames(m, f, 1, scores, labels), "(32 bytes)");
    f[0] = nv12;
    f[0].stride[1] = 7;
    expect_frame_fails(m, "NV12 UV stride < w", sb_classify_frames(m, f, 1, scores, labels), "stride[1]=7");
    f[0] = nv12;
    f[0].width = 7;
    expect_frame_fails(m, "NV12 odd width", sb_classify_frames(m, f, 1, scores, labels), "even width and height");
    f[0] = nv12;
    f[0].height = 5;
    expect_frame_fails(m, "NV12 odd height", sb_classify_frames(m, f, 1, scores, labels), "even width and height");
    f[0] = rgb;
    f[0].size[0] = 8 * 8 * 3 - 1;
    expect_frame_fails(m, "RGB buffer short by one", sb_classify_frames(m, f, 1, scores, labels), "needs 192 bytes");
    f[0] = rgb;
    f[0].stride[0] = 30;
    expect_frame_fails(m, "padded rows need (h-1)*stride+row", sb_classify_frames(m, f, 1, scores, labels),
                       "needs 234 bytes");
    f[0] = nv12;
    f[0].size[1] = 31;
    expect_frame_fails(m, "NV12 UV plane short", sb_classify_frames(m, f, 1, scores, labels), "size[1]=31");
    f[0] = rgb;
    f[0].size[0] = 0;
    expect_frame_fails(m, "frame size 0", sb_classify_frames(m, f, 1, scores, labels), "size[0]=0");
    f[0] = rgb;
    f[1] = nv12;
    f[1].width = 6;
    expect_frame_fails(m, "frames of two sizes", sb_classify_frames(m, f, 2, scores, labels), "frame 1 is 6x8");
    f[0] = rgb;
    f[0].width = 330;
    f[0].height = 10;
    f[0].size[0] = SIZE_MAX; /* claimed, never read: the limits refuse it first */
    expect_frame_fails(m, "frame beyond max_aspect", sb_classify_frames(m, f, 1, scores, labels), "aspect ratio 33:1");
    uint8_t out[8 * 8 * 3];
    expect(sb_frame_to_rgb(&nv12, out, sizeof out, err, sizeof err) == SB_OK && err[0] == '\0', "frame to RGB", err);
    expect(sb_frame_to_rgb(&nv12, out, sizeof out - 1, err, sizeof err) == SB_EINVAL && strstr(err, "rgb_size=191"),
           "frame to a short RGB buffer", err);
    expect(sb_frame_to_rgb(&nv12, NULL, sizeof out, err, sizeof err) == SB_EINVAL && strstr(err, "rgb_out is NULL"),
           "frame to NULL", err);
    expect(sb_frame_to_rgb(NULL, out, sizeof out, err, sizeof err) == SB_EINVAL && strstr(err, "frame is NULL"),
           "NULL frame to RGB", err);
    expect(sb_classify_frames(m, &nv12, 1, scores, labels) == SB_OK, "frames still work after errors", sb_last_error(m));
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
    bad = params;
    bad.unknown = (enum sb_unknown) 7;
    expect_open_fails("open with unknown=7", argv[1], bad, SB_EINVAL, "unknown=7");
    bad.unknown = SB_UNKNOWN_THRESHOLD;
    bad.unknown_threshold = 1.5;
    expect_open_fails("open with unknown_threshold 1.5", argv[1], bad, SB_EINVAL, "unknown_threshold=1.5");
    bad.unknown_threshold = NAN;
    expect_open_fails("open with unknown_threshold NaN", argv[1], bad, SB_EINVAL, "unknown_threshold");
    bad.unknown_threshold = 0.5; /* the contract model's graph predates the decision (no probabilities, known) */
    expect_open_fails("open an old model with a threshold", argv[1], bad, SB_EMODEL, "before its graph decided");
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
    expect(sb_unknown_threshold(m) == -1 && sb_unknown_threshold(NULL) == -2, "an old model runs with unknown off", "");
    {
        struct sb_frame frame = sb_default_frame();
        frame.width = frame.height = 8;
        frame.data[0] = rgb;
        frame.size[0] = 8 * 8 * 3;
        float open_set_score[1];
        const struct sb_result nothing = {0}, probabilities = {.probabilities = scores},
                               score = {.open_set_score = open_set_score};
        expect_call_fails(m, "predict NULL result", sb_predict(m, NULL, &frame, 1, NULL), SB_EINVAL);
        expect_call_fails(m, "predict asking for nothing", sb_predict(m, NULL, &frame, 1, &nothing), SB_EINVAL);
        expect(sb_predict(m, NULL, &frame, 1, &probabilities) == SB_EMODEL &&
               strstr(sb_last_error(m), "re-export") != NULL, "no probabilities from an old model", sb_last_error(m));
        expect(sb_predict(m, NULL, &frame, 1, &score) == SB_EMODEL && strstr(sb_last_error(m), "re-export") != NULL,
               "no open-set score from an old model", sb_last_error(m));
    }
    expect(sb_unknown_score(NULL) == NULL && sb_classes_score(NULL) == NULL, "score getters accept NULL", "");
    expect(sb_unknown_score(m) != NULL && strcmp(sb_unknown_score(m), "max_probability") == 0,
           "an old model's score is the top probability", sb_unknown_score(m));
    frame_cases(m, scores, labels, emb);
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
