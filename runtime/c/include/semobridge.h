/*
 * semobridge.h - classify images with an exported semobridge model (fused ONNX
 * graph) through ONNX Runtime's C API.
 *
 * Usage:
 *
 *     char err[256];
 *     struct sb_params params = sb_default_params();
 *     params.intra_op_num_threads = 4;
 *     struct sb_model * model = NULL;
 *     int rc = sb_load("model.onnx", params, &model, err, sizeof err);
 *     if (rc != SB_OK) { fprintf(stderr, "%s\n", err); return rc == SB_EINVAL ? 2 : rc == SB_EMODEL ? 3 : 4; }
 *
 *     int C = sb_num_classes(model);
 *     float * scores = malloc(sizeof(float) * n * C);
 *     int64_t * labels = malloc(sizeof(int64_t) * n);
 *     // rgb: n images of h x w packed RGB uint8 pixels, rows `stride` bytes apart
 *     if (sb_classify(model, rgb, n, h, w, stride, scores, labels) != 0) {
 *         fprintf(stderr, "%s\n", sb_last_error(model));
 *     } else {
 *         // label -1: the model calls the image unknown (no enrolled class; params.unknown, sb_unknown_threshold)
 *         printf("%s\n", labels[0] < 0 ? "unknown" : sb_class_name(model, (int) labels[0]));
 *     }
 *     free(scores); free(labels);
 *
 *     // Calibrated probabilities too (softmax(scores / T), rows sum to 1), any outputs in one run: sb_predict
 *     float * probabilities = malloc(sizeof(float) * C);
 *     struct sb_frame image = sb_default_frame();  // packed RGB
 *     image.data[0] = rgb; image.size[0] = (size_t) h * stride; image.stride[0] = stride;
 *     image.width = w; image.height = h;
 *     float open_set_score;  // what "unknown" is decided on: unknown below sb_unknown_threshold(model)
 *     struct sb_result result = {.labels = labels, .probabilities = probabilities,
 *                                .open_set_score = &open_set_score};  // NULL fields: not computed
 *     if (sb_predict(model, NULL, &image, 1, &result) == SB_OK && labels[0] >= 0) {
 *         printf("%s %.1f %% (%s %.3f)\n", sb_class_name(model, (int) labels[0]), 100 * probabilities[labels[0]],
 *                sb_unknown_score(model), open_set_score);
 *     }
 *
 *     // Class sets (docs/classes.md): use a class file written by semobridge_runtime (Classifier.save_classes,
 *     // semobridge-classes); NULL returns to the fitted classes. Or open with params.classes_path = "shop.classes".
 *     if (sb_set_classes(model, "shop.classes") != SB_OK) fprintf(stderr, "%s\n", sb_last_error(model));
 *     // When other threads may swap the set meanwhile, hold one for the call and for its names:
 *     struct sb_classes * classes = sb_get_classes(model);
 *     scores = malloc(sizeof(float) * n * sb_classes_count(classes));
 *     labels = malloc(sizeof(int64_t) * n);
 *     if (sb_classify_with(model, classes, rgb, n, h, w, stride, scores, labels) == SB_OK) {
 *         printf("%s\n", sb_classes_name(classes, (int) labels[0]));
 *     }
 *     sb_release_classes(classes);
 *     free(scores); free(labels);
 *
 *     // Camera frames as they come (padded rows; RGB, BGR, RGBA, BGRA or NV12), e.g. a V4L2 NV12 buffer:
 *     struct sb_frame frame = sb_default_frame();
 *     frame.layout = SB_LAYOUT_NV12;
 *     frame.width = 1280; frame.height = 720;
 *     frame.data[0] = buf; frame.stride[0] = bytesperline; frame.size[0] = bytesperline * 720;  // Y
 *     frame.data[1] = buf + bytesperline * 720; frame.stride[1] = bytesperline;                 // UV
 *     frame.size[1] = bytesused - bytesperline * 720;
 *     frame.full_range = false;  // limited "video" range, as most cameras and decoders deliver
 *     scores = malloc(sizeof(float) * sb_num_classes(model));
 *     labels = malloc(sizeof(int64_t));
 *     if (sb_classify_frames(model, &frame, 1, scores, labels) != SB_OK) fprintf(stderr, "%s\n", sb_last_error(model));
 *     free(scores); free(labels);
 *     sb_close(model);
 *
 * Images: n images of h x w RGB pixels, 3 bytes per pixel, row r of image i at
 * rgb + (i * h + r) * stride; stride >= 3 * w. Images must be exactly the size a
 * --fixed-size export expects; batches larger than a static batch size are split.
 * Images beyond the model's limits (longest side, h * w, longest / shortest side:
 * by default SB_MAX_SIDE, SB_MAX_PIXELS, SB_MAX_ASPECT, or the model's own from its
 * metadata) are refused with SB_EINVAL before anything is allocated or run: the
 * graph's resize costs grow with the image. Raise them with sb_params.max_*. Camera
 * frames (padded rows; BGR, RGBA, BGRA, NV12) go through struct sb_frame and
 * sb_classify_frames instead, converted once (see there).
 *
 * Errors (docs/errors.md): functions returning int return 0 on success and a
 * negative SB_E* code on failure, with a message in the model's error buffer
 * (sb_last_error). SB_EINVAL is an input error (change the arguments), SB_EMODEL a
 * model error (use another model file), SB_ERUNTIME and SB_ENOMEM runtime errors
 * (ONNX Runtime, the machine). sb_load returns the code and writes the reason to a
 * caller buffer; sb_open/sb_open_with_error return NULL on failure.
 *
 * Telemetry: ONNX Runtime (1.29+ outside Windows) writes a device id under
 * ~/.cache/Microsoft and uploads usage events unless ORT_DISABLE_TELEMETRY=1 is set
 * before its first environment is created. sb_load sets it (unless the variable is
 * already set) before creating its environment, and disables telemetry events on
 * it. setenv is not thread-safe against getenv in other threads: an app that reads
 * its environment from other threads while opening its first model should set
 * ORT_DISABLE_TELEMETRY=1 itself at start-up. Apart from that the library keeps no
 * global mutable state.
 *
 * Thread safety: after sb_open, sb_classify, sb_embed, sb_set_classes and the getters
 * may be called on one model from several threads at once (ONNX Runtime's session Run
 * is thread-safe; class sets are immutable, and a swap publishes a new one under a
 * lock while each call holds a reference to the set it began with). sb_class_name's
 * pointer is the exception: it lasts until the next swap (see it). The error buffer is per
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

/* SB_API marks the exported functions: dllexport while building the DLL (SB_BUILD) and
 * dllimport when using it (unless SB_STATIC) on Windows; default visibility with GCC/Clang,
 * where the library is built with -fvisibility=hidden. */
#if defined(_WIN32)
#if defined(SB_BUILD)
#define SB_API __declspec(dllexport)
#elif defined(SB_STATIC)
#define SB_API
#else
#define SB_API __declspec(dllimport)
#endif
#elif defined(SB_BUILD) && defined(__GNUC__)
#define SB_API __attribute__((visibility("default")))
#else
#define SB_API
#endif

#define SB_VERSION "0.1.0" /* the library version (semobridge-runtime's); sb_version() returns the one actually
                             linked. Structs grow at their end between versions (source compatible): an app is
                             built against the header of the library it links (check sb_version() against
                             SB_VERSION at start-up) */

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes: one per kind of error (docs/errors.md), as in Python and the exit codes. */
#define SB_OK 0
#define SB_EINVAL (-1)   /* input error (exit code 2): NULL pointer, bad size, image beyond a limit */
#define SB_EMODEL (-2)   /* model error (exit code 3): missing or unreadable file, not ours, wrong variant */
#define SB_ERUNTIME (-3) /* runtime error (exit code 4): ONNX Runtime or the machine failed */
#define SB_ENOMEM (-4)   /* runtime error (exit code 4): out of memory */

/* Default limits (equal to semobridge.validate and semobridge_runtime.limits). */
#define SB_MAX_SIDE 16384          /* longest image side in pixels */
#define SB_MAX_PIXELS (1LL << 26)  /* h * w */
#define SB_MAX_ASPECT 32.0         /* longest side / shortest side */
#define SB_MAX_THREADS 256         /* intra_op_num_threads and inter_op_num_threads */
#define SB_MAX_CLASSES (1 << 20)   /* classes in a class set (the graph's range of C) */

struct sb_model;
struct sb_classes; /* an immutable class set: names and the graph's class-set inputs (docs/classes.md) */

enum sb_graph_opt {
    SB_GRAPH_OPT_DISABLE = 0,
    SB_GRAPH_OPT_BASIC = 1,
    SB_GRAPH_OPT_EXTENDED = 2,
    SB_GRAPH_OPT_ALL = 99,
};

/* The open-set decision (docs/method.md, "The open set"), computed in the model's graph exactly as in Python and
 * serving: probabilities = softmax(scores / T); an image whose open-set score is below the threshold is unknown and
 * gets label -1. The open-set score is the one the model's fit chose (its metadata's open_set.score, sb_unknown_score):
 * "max_probability", the top calibrated probability, or "mcm", Maximum Concept Matching (the top of the softmax of the
 * image-text cosines); a class file that carries its own calibration brings its own score. Models exported before the
 * graph computed it open with unknown off and say so once (one line on stderr, at sb_load, for SB_UNKNOWN_AUTO);
 * SB_UNKNOWN_THRESHOLD refuses them (SB_EMODEL). A model fitted without calibration says so too, and every image gets a
 * class unless a class file brings its own calibration (SB_UNKNOWN_AUTO applies that one, as Python does). */
enum sb_unknown {
    SB_UNKNOWN_AUTO = 0,      /* the calibrated threshold: a class file's own, else the model's (off for a model exported
                                 without calibration, unless the class file brings one) */
    SB_UNKNOWN_OFF = 1,       /* every image gets a class */
    SB_UNKNOWN_THRESHOLD = 2, /* sb_params.unknown_threshold */
};

struct sb_params {
    int intra_op_num_threads;    /* 0: ONNX Runtime's default */
    int inter_op_num_threads;    /* 0: ONNX Runtime's default */
    bool use_cuda;               /* sb_open fails (no silent CPU fallback) if the CUDA EP is unavailable */
    int cuda_device_id;
    enum sb_graph_opt graph_optimization_level;
    bool allow_spinning;         /* true: ORT's CPU threads spin between calls (lowest latency); false: they
                                    sleep, leaving the cores to the app's other threads and sessions */
    /* Fields are only ever appended (source compatible; see SB_VERSION): those below came with the image limits. */
    int max_side;                /* longest image side; 0: the model's limit (metadata), else SB_MAX_SIDE */
    int64_t max_pixels;          /* h * w; 0: the model's limit, else SB_MAX_PIXELS */
    double max_aspect;           /* longest / shortest side, at least 1; 0: the model's limit, else SB_MAX_ASPECT */
    /* Those below came with class sets. */
    const char * classes_path;   /* a class file to open the model with (as sb_set_classes); NULL: the fitted classes */
    /* Those below came with the open-set decision. */
    enum sb_unknown unknown;     /* when an image is unknown (label -1); default SB_UNKNOWN_AUTO */
    double unknown_threshold;    /* SB_UNKNOWN_THRESHOLD: unknown below this open-set score (sb_unknown_score), 0..1 */
};

/* Defaults: ORT thread counts, CPU only, all graph optimisations, spinning threads, the model's limits, unknown by the
 * model's calibrated threshold. */
SB_API struct sb_params sb_default_params(void);

/* Version of the linked library ("0.1.0"; compare with SB_VERSION from the header compiled against). */
SB_API const char * sb_version(void);

/* Open a model into *out (NULL on failure). Returns SB_OK or an SB_E* code; on failure also writes a
 * NUL-terminated reason into err (if err && errlen > 0). Thread counts must be 0..SB_MAX_THREADS.
 * The model's class names are checked as a class file's are (docs/classes.md) and their count against the
 * graph's: where the graph does not declare it (a graph taking its class set as data), by running the model
 * once on a blank image. Names that do not fit give SB_EMODEL. */
SB_API int sb_load(const char * path, struct sb_params params, struct sb_model ** out, char * err, size_t errlen);

/* Like sb_load, returning the model or NULL on failure (the reason in err, if err && errlen > 0). */
SB_API struct sb_model * sb_open_with_error(const char * path, struct sb_params params, char * err, size_t errlen);

/* Like sb_load, returning the model or NULL. */
SB_API struct sb_model * sb_open(const char * path, struct sb_params params);

/* scores_out: n * C floats, C the class count of the model's current set (sb_num_classes; if another thread may
 * swap the set meanwhile, use sb_get_classes and sb_classify_with); labels_out: n labels, the top class or -1 for an
 * image the model calls unknown (sb_params.unknown). Needs a uint8-input model. */
SB_API int sb_classify(struct sb_model * model, const uint8_t * rgb, int n, int h, int w, int stride,
                float * scores_out, int64_t * labels_out);

/* emb_out: n * sb_embedding_dim floats, L2-normalised. Needs a uint8-input model. */
SB_API int sb_embed(struct sb_model * model, const uint8_t * rgb, int n, int h, int w, int stride, float * emb_out);

SB_API int sb_num_classes(const struct sb_model * model);       /* of the current class set; -1 if model is NULL */
SB_API int sb_embedding_dim(const struct sb_model * model);     /* -1 if model is NULL */
/* Name i of the current class set, NULL if out of range. The pointer stays valid until the model's class set is
 * swapped (sb_set_classes) or it is closed: with swaps in other threads, use sb_get_classes and sb_classes_name. */
SB_API const char * sb_class_name(const struct sb_model * model, int i);

/* Class sets (docs/classes.md). A model starts with its fitted classes, or those of sb_params.classes_path.
 *
 * sb_set_classes makes the class file at `path` (written by semobridge_runtime's Classifier.save_classes or
 * semobridge-classes) the model's class set; path NULL returns to the fitted classes. The file is read and checked
 * whole first (truncation, format, the model's backbone weights and bridge hashes, tensor offsets and shapes, names,
 * finite values, the open set's temperature, threshold and score): on failure it returns SB_EMODEL (SB_EINVAL for a
 * NULL model, SB_ENOMEM) with the reason in sb_last_error, and the model keeps its class set. A model exported with its
 * classes baked in refuses (SB_EMODEL), and so does one whose graph cannot compute the file's open-set score ("mcm" on
 * an export from before the score was a choice: re-export it).
 *
 * Swaps are atomic with respect to calls in other threads: each sb_classify uses the set that was current when it
 * began, whole, for the whole call, so its scores are those of the old set or of the new one, never a mix. A set is
 * freed when the model and the last call or reference using it are done with it. */
SB_API int sb_set_classes(struct sb_model * model, const char * path);

/* A reference to the model's current class set (NULL if model is NULL): its count and names stay as they are however
 * the model's set changes meanwhile, until sb_release_classes. Classify with exactly this set (its count sizes
 * scores_out, its names name the labels) through sb_classify_with. Release every reference; a set may be released
 * after its model is closed, but used only with the open model it came from. */
SB_API struct sb_classes * sb_get_classes(struct sb_model * model);
SB_API void sb_release_classes(struct sb_classes * classes);             /* NULL is allowed */
SB_API int sb_classes_count(const struct sb_classes * classes);          /* -1 if classes is NULL */
SB_API const char * sb_classes_name(const struct sb_classes * classes, int i); /* NULL if out of range */
/* The open set a class file carries (its metadata `temperature` and `threshold`, docs/classes.md): 1 with both written,
 * 0 when the set carries none (the fitted classes, or a file written before: the model's calibration applies), -1 if
 * classes is NULL. */
SB_API int sb_classes_open_set(const struct sb_classes * classes, double * temperature, double * threshold);
/* The open-set score that open set's threshold is on ("max_probability" or "mcm": the file's `score`, "max_probability"
 * where it names none); NULL when the set carries no open set (sb_classes_open_set 0) or classes is NULL. */
SB_API const char * sb_classes_score(const struct sb_classes * classes);

/* sb_classify with class set `classes` (from sb_get_classes(model)); scores_out: n * sb_classes_count(classes) floats. */
SB_API int sb_classify_with(struct sb_model * model, const struct sb_classes * classes, const uint8_t * rgb, int n,
                            int h, int w, int stride, float * scores_out, int64_t * labels_out);

/* Frames as cameras and decoders deliver them (V4L2, GStreamer, Argus, OpenCV, Android): padded rows and other
 * layouts than packed RGB, converted to the model's RGB input once (packed RGB is used in place). NV12 is converted by
 * BT.601 in 16-bit fixed point, each U, V pair the chroma of a 2x2 block, as semobridge_runtime/frames.py defines
 * (the reference rule; a test checks this library against it bit for bit). Fields are only ever appended (SB_VERSION):
 * start from sb_default_frame() (or zero) and set the fields. */
enum sb_layout {
    SB_LAYOUT_RGB = 0,  /* 3 bytes per pixel: R, G, B */
    SB_LAYOUT_BGR = 1,  /* 3 bytes per pixel: B, G, R (OpenCV) */
    SB_LAYOUT_RGBA = 2, /* 4 bytes per pixel, alpha ignored */
    SB_LAYOUT_BGRA = 3, /* 4 bytes per pixel, alpha ignored */
    SB_LAYOUT_NV12 = 4, /* plane 0: Y, height rows of width bytes; plane 1: height/2 rows of width/2 U, V pairs */
};

struct sb_frame {
    const uint8_t * data[2]; /* plane 0: the pixels (NV12: Y); plane 1: NV12's interleaved UV plane (else unused) */
    size_t size[2];          /* bytes readable at data[k]: a plane must hold (rows - 1) * stride + its row's bytes */
    int stride[2];           /* bytes from one row to the next, >= a row's bytes (width x bytes per pixel; NV12:
                                width for both planes); 0: packed rows */
    int width, height;       /* pixels; even for NV12 */
    enum sb_layout layout;
    bool full_range;         /* NV12: true for full-range YUV (JPEG), false for limited "video" range (Y 16..235) */
};

/* A frame with every field zero: packed RGB rows, limited range; set data, size, width, height (and the rest). */
SB_API struct sb_frame sb_default_frame(void);

/* Frame versions of sb_classify, sb_classify_with and sb_embed: n frames of one width and height (their layouts and
 * strides may differ). Frames are checked whole (layout, NULL planes, strides, even NV12 sides, sizes, the model's
 * limits) before anything is read, allocated or run: SB_EINVAL with the frame and the reason in sb_last_error. */
SB_API int sb_classify_frames(struct sb_model * model, const struct sb_frame * frames, int n, float * scores_out,
                              int64_t * labels_out);
SB_API int sb_classify_frames_with(struct sb_model * model, const struct sb_classes * classes,
                                   const struct sb_frame * frames, int n, float * scores_out, int64_t * labels_out);
SB_API int sb_embed_frames(struct sb_model * model, const struct sb_frame * frames, int n, float * emb_out);

/* The RGB pixels a frame classifies as: width * height * 3 bytes, packed rows, into rgb_out (rgb_size bytes).
 * SB_OK, or SB_EINVAL with the reason in err (if err && errlen > 0). Needs no model. */
SB_API int sb_frame_to_rgb(const struct sb_frame * frame, uint8_t * rgb_out, size_t rgb_size, char * err,
                           size_t errlen);

/* What sb_predict writes for n images: set the outputs wanted, leave the others NULL (not computed). Fields are only
 * ever appended (SB_VERSION): start from zero ({0} or memset). */
struct sb_result {
    float * scores;        /* n * C blend scores, C = the class set's count */
    int64_t * labels;      /* n labels: the top class, or -1 for an image the model calls unknown (sb_params.unknown) */
    float * probabilities; /* n * C calibrated probabilities softmax(scores / T), each row summing to 1 (SB_EMODEL for
                              a model exported before its graph computed them: re-export it) */
    float * embeddings;    /* n * sb_embedding_dim floats, L2-normalised */
    /* Those below came with the choice of the open-set score. */
    float * open_set_score; /* n open-set scores (sb_unknown_score's): an image is unknown below the threshold
                               (sb_unknown_threshold); a graph exported before the score was a choice decides on the
                               top probability, which this gives; SB_EMODEL as for probabilities */
};

/* Classify n frames (sb_classify_frames' rules; a packed RGB batch is a frame per image, layout SB_LAYOUT_RGB) with
 * class set `classes` (from sb_get_classes(model); NULL: the model's current set, taken once for the call) into the
 * outputs `result` asks for, in one model run. */
SB_API int sb_predict(struct sb_model * model, const struct sb_classes * classes, const struct sb_frame * frames, int n,
                      const struct sb_result * result);

/* The open-set score below which an image is unknown (sb_params.unknown) with the model's current class set (a class
 * file's own with SB_UNKNOWN_AUTO, where it brings one), or -1 when unknown is off; -2 if model is NULL. */
SB_API double sb_unknown_threshold(const struct sb_model * model);

/* The open-set score of the model's current class set ("max_probability" or "mcm": the class file's where it brings its
 * own calibration, else the model's), what sb_unknown_threshold and sb_result.open_set_score are on; NULL if model is
 * NULL. A static string. */
SB_API const char * sb_unknown_score(const struct sb_model * model);

/* Message of the most recent failure on this model ("" if none); owned by the model. */
SB_API const char * sb_last_error(const struct sb_model * model);

SB_API void sb_close(struct sb_model * model); /* NULL is allowed */

#ifdef __cplusplus
}
#endif

#endif /* SEMOBRIDGE_H */
