/*
 * semobridge.h - classify images with an exported semobridge model (fused ONNX
 * graph) through ONNX Runtime's C API.
 *
 * Usage:
 *
 *     char err[256];
 *     struct sb_params params = sb_default_params();
 *     params.intra_op_num_threads = 4;
 *     struct sb_model * model = sb_open_with_error("model.onnx", params, err, sizeof err);
 *     if (!model) { fprintf(stderr, "%s\n", err); return 1; }
 *
 *     int C = sb_num_classes(model);
 *     float * scores = malloc(sizeof(float) * n * C);
 *     int64_t * labels = malloc(sizeof(int64_t) * n);
 *     // rgb: n images of h x w packed RGB uint8 pixels, rows `stride` bytes apart
 *     if (sb_classify(model, rgb, n, h, w, stride, scores, labels) != 0) {
 *         fprintf(stderr, "%s\n", sb_last_error(model));
 *     } else {
 *         printf("%s\n", sb_class_name(model, (int) labels[0]));
 *     }
 *     free(scores); free(labels);
 *     sb_close(model);
 *
 * Images: n images of h x w RGB pixels, 3 bytes per pixel, row r of image i at
 * rgb + (i * h + r) * stride; stride >= 3 * w. Images must be exactly the size a
 * --fixed-size export expects; batches larger than a static batch size are split.
 *
 * Errors: functions returning int return 0 on success and a negative SB_E* code on
 * failure, with a message in the model's error buffer (sb_last_error). sb_open
 * returns NULL on failure; sb_open_with_error also writes the reason to a caller
 * buffer. The library keeps no global mutable state.
 *
 * Thread safety: after sb_open, sb_classify, sb_embed and the getters may be called
 * on one model from several threads at once (ONNX Runtime's session Run is
 * thread-safe and the model is otherwise read-only). The error buffer is per
 * model: failures write it under a lock, and a later failure in any thread
 * replaces it. So when threads share a model, read sb_last_error only while no
 * other thread is calling into that model, or give each thread its own model when
 * it needs exact messages; the return code is always exact. sb_close must not race
 * with any other call on the same model.
 */
#ifndef SEMOBRIDGE_H
#define SEMOBRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(SB_BUILD) && defined(__GNUC__)
#define SB_API __attribute__((visibility("default")))
#else
#define SB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SB_OK 0
#define SB_EINVAL (-1)   /* invalid argument: NULL pointer, bad size, wrong model kind */
#define SB_EMODEL (-2)   /* the model cannot be used: not ours, unsupported input */
#define SB_ERUNTIME (-3) /* ONNX Runtime reported an error */
#define SB_ENOMEM (-4)   /* out of memory */

struct sb_model;

enum sb_graph_opt {
    SB_GRAPH_OPT_DISABLE = 0,
    SB_GRAPH_OPT_BASIC = 1,
    SB_GRAPH_OPT_EXTENDED = 2,
    SB_GRAPH_OPT_ALL = 99,
};

struct sb_params {
    int intra_op_num_threads;    /* 0: ONNX Runtime's default */
    int inter_op_num_threads;    /* 0: ONNX Runtime's default */
    bool use_cuda;               /* sb_open fails (no silent CPU fallback) if the CUDA EP is unavailable */
    int cuda_device_id;
    enum sb_graph_opt graph_optimization_level;
    bool allow_spinning;         /* true: ORT's CPU threads spin between calls (lowest latency); false: they
                                    sleep, leaving the cores to the app's other threads and sessions */
};

/* Defaults: ORT thread counts, CPU only, all graph optimisations, spinning threads. */
SB_API struct sb_params sb_default_params(void);

/* Open a model; NULL on failure. */
SB_API struct sb_model * sb_open(const char * path, struct sb_params params);

/* Like sb_open; on failure also writes a NUL-terminated reason into err (if err && errlen > 0). */
SB_API struct sb_model * sb_open_with_error(const char * path, struct sb_params params, char * err, size_t errlen);

/* scores_out: n * sb_num_classes floats; labels_out: n argmax labels. Needs a uint8-input model. */
SB_API int sb_classify(struct sb_model * model, const uint8_t * rgb, int n, int h, int w, int stride,
                float * scores_out, int64_t * labels_out);

/* emb_out: n * sb_embedding_dim floats, L2-normalised. Needs a uint8-input model. */
SB_API int sb_embed(struct sb_model * model, const uint8_t * rgb, int n, int h, int w, int stride, float * emb_out);

SB_API int sb_num_classes(const struct sb_model * model);       /* -1 if model is NULL */
SB_API int sb_embedding_dim(const struct sb_model * model);     /* -1 if model is NULL */
SB_API const char * sb_class_name(const struct sb_model * model, int i); /* NULL if out of range */

/* Message of the most recent failure on this model ("" if none); owned by the model. */
SB_API const char * sb_last_error(const struct sb_model * model);

SB_API void sb_close(struct sb_model * model); /* NULL is allowed */

#ifdef __cplusplus
}
#endif

#endif /* SEMOBRIDGE_H */
