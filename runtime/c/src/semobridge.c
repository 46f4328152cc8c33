/* semobridge.c - the semobridge C library over ONNX Runtime's C API. See semobridge.h. */
#define _POSIX_C_SOURCE 200809L /* setenv, stat */
#include "semobridge.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <onnxruntime_c_api.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "classes.h"
#include "contract.h"
#include "frames.h"
#include "json.h"

#define SB_ERR_LEN 512
#define SB_MAX_OUTPUTS 6

struct sb_model {
    const OrtApi * api;
    OrtEnv * env;
    OrtSession * session;
    OrtMemoryInfo * mem;
    char * input_name;
    bool input_uint8;
    int64_t batch, height, width; /* static input dims, or -1 when dynamic */
    int embedding_dim;
    int64_t max_side, max_pixels; /* image limits in force (sb_params, else the model's, else SB_MAX_*) */
    double max_aspect;
    char * path;                  /* the model file, for messages */
    bool head_as_data;            /* the graph takes the class set as inputs (docs/classes.md) */
    char * backbone;              /* metadata backbone.name, backbone.weights_hash, bridge_hash: what class files match */
    char * weights_hash;
    char * bridge_hash;
    size_t weights_hash_len, bridge_hash_len;
    bool decides;                 /* the graph computes the open-set decision: outputs probabilities, known */
    bool scores_open_set;         /* the graph outputs open_set_score (the abstention score known is decided on) */
    bool has_mcm_weight;          /* the graph takes mcm_weight (which abstention score; older graphs: max_probability) */
    int score;                    /* the model's abstention score (metadata open_set.score; sb_open_set_scores index) */
    bool feed_threshold;          /* feed the graph's `threshold` input (else its default: the calibrated one) */
    bool unknown_auto;            /* SB_UNKNOWN_AUTO: a class set's own threshold (class files), where it has one, wins */
    bool unknown_given;           /* SB_UNKNOWN_THRESHOLD: the caller's threshold, on the model's score always */
    float threshold;              /* what is fed (SB_UNKNOWN_OFF: 0, every top probability is >= 0) */
    double threshold_in_force;    /* sb_unknown_threshold: -1 when unknown is off */
    struct sb_classes * fitted;   /* the fitted classes (the graph's defaults) */
    struct sb_classes * classes;  /* the current class set (one reference is the model's); swapped under classes_lock */
    pthread_mutex_t classes_lock;
    pthread_mutex_t err_lock;
    char err[SB_ERR_LEN];
};

/* One output to copy back from a run: name, destination, values per image, element size and type, rank (1: [N], 2:
 * [N, per_image]). */
struct sb_output {
    const char * name;
    void * dst;
    size_t per_image;
    size_t elem_size;
    ONNXTensorElementDataType type;
    size_t rank;
};

static int fail(struct sb_model * m, int code, const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&m->err_lock);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    pthread_mutex_unlock(&m->err_lock);
    va_end(ap);
    return code;
}

/* Record an ORT failure, release its status, return SB_ERUNTIME. */
static int ort_fail(struct sb_model * m, OrtStatus * status, const char * what) {
    int rc = fail(m, SB_ERUNTIME, "%s: %s", what, m->api->GetErrorMessage(status));
    m->api->ReleaseStatus(status);
    return rc;
}

/* ORT_TRY(m, call, what): run one OrtApi call; if it fails, record "what: ORT's message" as SB_ERUNTIME
 * and jump to cleanup. The calling function must declare `int rc` (set here on failure) and have a
 * `done:` label after which it releases whatever it holds and returns rc. */
#define ORT_TRY(m, call, what)                     \
    do {                                           \
        OrtStatus * status_ = (call);              \
        if (status_) {                             \
            rc = ort_fail((m), status_, (what));   \
            goto done;                             \
        }                                          \
    } while (0)

static void ort_free(const OrtApi * api, OrtAllocator * alloc, void * p) {
    if (p) {
        OrtStatus * status = api->AllocatorFree(alloc, p);
        if (status) api->ReleaseStatus(status);
    }
}

/* a * b into *out; false on size_t overflow. */
static bool mul_size(size_t a, size_t b, size_t * out) {
    if (b != 0 && a > SIZE_MAX / b) return false;
    *out = a * b;
    return true;
}

/* ONNX Runtime (1.29+, outside Windows) starts its telemetry (a device id under ~/.cache/Microsoft,
 * uploads) with its first environment unless ORT_DISABLE_TELEMETRY=1 is set by then. Set it once,
 * before our first CreateEnv, keeping any value the app chose itself. */
static pthread_once_t telemetry_once = PTHREAD_ONCE_INIT;
static void disable_telemetry(void) { setenv("ORT_DISABLE_TELEMETRY", "1", 0); }

const char * sb_version(void) { return SB_VERSION; }

struct sb_params sb_default_params(void) {
    struct sb_params p = {
        .intra_op_num_threads = 0,
        .inter_op_num_threads = 0,
        .use_cuda = false,
        .cuda_device_id = 0,
        .graph_optimization_level = SB_GRAPH_OPT_ALL,
        .allow_spinning = true,
        .max_side = 0,
        .max_pixels = 0,
        .max_aspect = 0.0,
        .classes_path = NULL,
        .unknown = SB_UNKNOWN_AUTO,
        .unknown_threshold = 0.0,
    };
    return p;
}

/* The metadata's format_version: a version this library reads (1 up to SB_METADATA_FORMAT_VERSION, as the Python
 * runtime's semobridge_runtime.metadata), else SB_EMODEL saying whether to upgrade or to re-export. */
static int check_format_version(struct sb_model * m, const struct json * meta) {
    size_t value;
    uint64_t version = 0;
    if (json_get(meta, 0, "format_version", &value) != 1 || !json_uint(meta, value, &version) || version < 1) {
        return fail(m, SB_EMODEL, "the model's metadata has no usable format_version (1 up to %d); re-export the model",
                    SB_METADATA_FORMAT_VERSION);
    }
    if (version > SB_METADATA_FORMAT_VERSION) {
        return fail(m, SB_EMODEL, "the model's metadata is format %llu, newer than this library reads (%d); upgrade "
                    "libsemobridge (semobridge-runtime)", (unsigned long long) version, SB_METADATA_FORMAT_VERSION);
    }
    return SB_OK;
}

/* A positive number at `key` of JSON object `object`: the number, 0 when absent, -1 when not a positive number. */
static double json_positive(const struct json * j, size_t object, const char * key) {
    size_t value;
    double x = -1;
    const int found = json_get(j, object, key, &value);
    if (found == 0) return 0;
    return found == 1 && json_double(j, value, &x) && x > 0 && x <= DBL_MAX ? x : -1;
}

/* Element type and dims (up to 4; -1 where dynamic) of a tensor type; SB_EMODEL if not a tensor. */
static int tensor_shape(struct sb_model * m, OrtTypeInfo * type_info, const char * what,
                        ONNXTensorElementDataType * type, size_t * ndims, int64_t dims[4]) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    const OrtTensorTypeAndShapeInfo * tensor_info = NULL;
    ORT_TRY(m, api->CastTypeInfoToTensorInfo(type_info, &tensor_info), what);
    if (!tensor_info) return fail(m, SB_EMODEL, "%s is not a tensor; re-export the model", what);
    ORT_TRY(m, api->GetTensorElementType(tensor_info, type), what);
    ORT_TRY(m, api->GetDimensionsCount(tensor_info, ndims), what);
    if (*ndims > 4) return fail(m, SB_EMODEL, "%s has %zu dims, at most 4 expected; re-export the model", what, *ndims);
    ORT_TRY(m, api->GetDimensions(tensor_info, dims, *ndims), what);
done:
    return rc;
}

/* Read the single input's name, element type and static dims: uint8 [N,H,W,3] or float [N,3,S,S]. */
static int read_input(struct sb_model * m, OrtAllocator * alloc, const struct json * meta) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    size_t count = 0, ndims = 0;
    char * name = NULL;
    OrtTypeInfo * type_info = NULL;
    ONNXTensorElementDataType type;
    int64_t dims[4];
    const double size = json_positive(meta, 0, "image_size");

    ORT_TRY(m, api->SessionGetInputCount(m->session, &count), "reading the model's inputs");
    if (count != 1) { rc = fail(m, SB_EMODEL, "the model has %zu inputs, expected 1 (image); re-export it", count); goto done; }
    ORT_TRY(m, api->SessionGetInputName(m->session, 0, alloc, &name), "reading the input name");
    m->input_name = malloc(strlen(name) + 1);
    if (!m->input_name) { rc = fail(m, SB_ENOMEM, "out of memory"); goto done; }
    strcpy(m->input_name, name);
    ORT_TRY(m, api->SessionGetInputTypeInfo(m->session, 0, &type_info), "reading the input type");
    if ((rc = tensor_shape(m, type_info, "the model input", &type, &ndims, dims)) != SB_OK) goto done;
    m->input_uint8 = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    if (ndims != 4 || (m->input_uint8 && dims[3] != 3) ||
        (!m->input_uint8 && (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || dims[1] != 3 ||
                             (dims[2] > 0 && dims[2] != (int64_t) size) || (dims[3] > 0 && dims[3] != (int64_t) size)))) {
        rc = fail(m, SB_EMODEL, "the model input is neither uint8 [N,H,W,3] RGB nor float [N,3,S,S] with S the "
                  "metadata's image_size; re-export it");
        goto done;
    }
    m->batch = dims[0] > 0 ? dims[0] : -1;
    m->height = dims[1] > 0 ? dims[1] : -1;
    m->width = dims[2] > 0 ? dims[2] : -1;
done:
    if (type_info) api->ReleaseTypeInfo(type_info);
    ort_free(api, alloc, name);
    return rc;
}

/* Check output `name` is a `type` tensor of `ndims` dims; store dim 1 (-1 if dynamic or ndims < 2) in *width. With
 * `present`, a missing output is no error: *present says whether the graph has it (and *width stays as it was). */
static int read_output(struct sb_model * m, OrtAllocator * alloc, const char * name,
                       ONNXTensorElementDataType want_type, size_t want_ndims, int64_t * width, bool * present) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    size_t count = 0, ndims = 0;
    OrtTypeInfo * type_info = NULL;
    ONNXTensorElementDataType type;
    int64_t dims[4] = {-1, -1, -1, -1};
    bool found = false;

    ORT_TRY(m, api->SessionGetOutputCount(m->session, &count), "reading the model's outputs");
    for (size_t i = 0; i < count && !found; i++) {
        char * out_name = NULL;
        ORT_TRY(m, api->SessionGetOutputName(m->session, i, alloc, &out_name), "reading an output name");
        found = strcmp(out_name, name) == 0;
        ort_free(api, alloc, out_name);
        if (found) ORT_TRY(m, api->SessionGetOutputTypeInfo(m->session, i, &type_info), "reading an output type");
    }
    if (present) *present = found;
    if (!found && present) goto done;
    if (!found) { rc = fail(m, SB_EMODEL, "the model has no '%s' output; re-export it with semobridge", name); goto done; }
    if ((rc = tensor_shape(m, type_info, name, &type, &ndims, dims)) != SB_OK) goto done;
    if (type != want_type || ndims != want_ndims) {
        rc = fail(m, SB_EMODEL, "output '%s' has element type %d and %zu dims, expected %d and %zu; re-export the model",
                  name, (int) type, ndims, (int) want_type, want_ndims);
        goto done;
    }
    *width = ndims > 1 && dims[1] > 0 ? dims[1] : -1;
done:
    if (type_info) api->ReleaseTypeInfo(type_info);
    return rc;
}

/* The graph's class count where its scores output does not declare it (a graph that takes its class set as data,
 * docs/classes.md): the width of the scores it gives one batch of blank images with its own class set. */
static int graph_classes(struct sb_model * m, const struct json * meta, int64_t * count) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    OrtTypeInfo * type_info = NULL;
    OrtValue * input = NULL, * scores = NULL;
    OrtTensorTypeAndShapeInfo * info = NULL;
    ONNXTensorElementDataType type;
    size_t ndims = 0, bytes;
    int64_t dims[4];
    void * blank = NULL;
    const char * output = SB_OUTPUT_SCORES;
    const double size = json_positive(meta, 0, "image_size");

    ORT_TRY(m, api->SessionGetInputTypeInfo(m->session, 0, &type_info), "reading the input type");
    if ((rc = tensor_shape(m, type_info, "the model input", &type, &ndims, dims)) != SB_OK) goto done;
    bytes = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 ? 1 : sizeof(float); /* read_input: uint8 or float, 4 dims */
    for (size_t i = 0; i < 4; i++) {
        if (dims[i] <= 0) dims[i] = i == 0 ? 1 : size >= 1 && size <= SB_MAX_SIDE ? (int64_t) size : -1;
        if (dims[i] <= 0 || !mul_size(bytes, (size_t) dims[i], &bytes) || bytes > ((size_t) 1 << 30)) {
            rc = fail(m, SB_EMODEL, "cannot run the model to count its classes (its input needs an image_size of 1 to %d "
                      "in its metadata and at most 1 GiB per batch); re-export it", SB_MAX_SIDE);
            goto done;
        }
    }
    if (!(blank = calloc(1, bytes))) { rc = fail(m, SB_ENOMEM, "out of memory for a %zu-byte input batch", bytes); goto done; }
    ORT_TRY(m, api->CreateTensorWithDataAsOrtValue(m->mem, blank, bytes, dims, 4, type, &input), "creating the input tensor");
    ORT_TRY(m, api->Run(m->session, NULL, (const char * const *) &m->input_name, (const OrtValue * const *) &input, 1,
                        &output, 1, &scores),
            "running the model once on a blank image, to count its classes");
    ORT_TRY(m, api->GetTensorTypeAndShape(scores, &info), "reading the scores");
    ORT_TRY(m, api->GetDimensionsCount(info, &ndims), "reading the scores");
    if (ndims != 2) { rc = fail(m, SB_EMODEL, "the model's scores have %zu dims, expected 2; re-export it", ndims); goto done; }
    ORT_TRY(m, api->GetDimensions(info, dims, 2), "reading the scores");
    *count = dims[1];
done:
    if (info) api->ReleaseTensorTypeAndShapeInfo(info);
    if (scores) api->ReleaseValue(scores);
    if (input) api->ReleaseValue(input);
    if (type_info) api->ReleaseTypeInfo(type_info);
    free(blank);
    return rc;
}

/* The outputs: scores float [N, C], label int64 [N], embedding float [N, d] with d as in the metadata, C as the class
 * names; where the graph has them (newer exports), probabilities float [N, C], known bool [N] and open_set_score float
 * [N]. Each run's outputs are checked again against these shapes (copy_output) before a value is read. */
static int read_outputs(struct sb_model * m, OrtAllocator * alloc, const struct json * meta) {
    int rc;
    int64_t scores_width = -1, embedding_width = -1, probabilities_width = -1, unused = -1;
    bool probabilities = false, known = false;
    const double meta_dim = json_positive(meta, 0, "embedding_dim");
    if ((rc = read_output(m, alloc, SB_OUTPUT_SCORES, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2, &scores_width, NULL)) != SB_OK ||
        (rc = read_output(m, alloc, SB_OUTPUT_LABEL, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 1, &unused, NULL)) != SB_OK ||
        (rc = read_output(m, alloc, SB_OUTPUT_EMBEDDING, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2, &embedding_width, NULL)) != SB_OK ||
        (rc = read_output(m, alloc, SB_OUTPUT_PROBABILITIES, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2, &probabilities_width,
                          &probabilities)) != SB_OK ||
        (rc = read_output(m, alloc, SB_OUTPUT_KNOWN, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, 1, &unused, &known)) != SB_OK ||
        (rc = read_output(m, alloc, SB_OUTPUT_OPEN_SET_SCORE, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 1, &unused,
                          &m->scores_open_set)) != SB_OK) {
        return rc;
    }
    m->decides = probabilities && known;
    if (meta_dim > 0 && embedding_width > 0 && (double) embedding_width != meta_dim) {
        return fail(m, SB_EMODEL, "the model's embedding has %lld values but its metadata says %.0f; re-export it",
                    (long long) embedding_width, meta_dim);
    }
    if (embedding_width <= 0) embedding_width = meta_dim > 0 && meta_dim <= INT_MAX ? (int64_t) meta_dim : -1;
    if (embedding_width <= 0 || embedding_width > INT_MAX) {
        return fail(m, SB_EMODEL, "cannot tell the model's embedding size; re-export it");
    }
    m->embedding_dim = (int) embedding_width;
    if (scores_width <= 0 && (rc = graph_classes(m, meta, &scores_width)) != SB_OK) return rc;
    if (scores_width != m->fitted->count) {
        return fail(m, SB_EMODEL, "the model's scores have %lld classes but its metadata names %d; re-export it",
                    (long long) scores_width, m->fitted->count);
    }
    if (probabilities_width > 0 && probabilities_width != scores_width) {
        return fail(m, SB_EMODEL, "the model's probabilities have %lld classes but its scores %lld; re-export it",
                    (long long) probabilities_width, (long long) scores_width);
    }
    return SB_OK;
}

/* The image limits in force: the caller's (sb_params), else the model's ("limits" in its metadata), else SB_MAX_*. */
static int read_limits(struct sb_model * m, const struct json * meta, struct sb_params p) {
    const char * keys[3] = {"max_side", "max_pixels", "max_aspect"};
    const double defaults[3] = {SB_MAX_SIDE, (double) SB_MAX_PIXELS, SB_MAX_ASPECT};
    double values[3];
    size_t limits = 0;
    const int found = json_get(meta, 0, "limits", &limits);
    if (found < 0 || (found == 1 && meta->tokens[limits].type != JSON_OBJECT)) {
        return fail(m, SB_EMODEL, "the model's metadata 'limits' is not an object; re-export it");
    }
    for (int i = 0; i < 3; i++) {
        values[i] = found ? json_positive(meta, limits, keys[i]) : 0;
        if (values[i] == 0) values[i] = defaults[i];
        if (values[i] < 1) {  /* the rule of semobridge_runtime.limits: a finite number >= 1 */
            return fail(m, SB_EMODEL, "the model's metadata limit '%s' is not a positive number (at least 1); "
                        "re-export it", keys[i]);
        }
        if (i < 2 && values[i] > 0x1p62) values[i] = 0x1p62;  /* beyond any image; the cast below stays defined */
    }
    m->max_side = p.max_side > 0 ? p.max_side : (int64_t) values[0];
    m->max_pixels = p.max_pixels > 0 ? p.max_pixels : (int64_t) values[1];
    m->max_aspect = p.max_aspect > 0 ? p.max_aspect : values[2];
    return SB_OK;
}

/* A metadata string at `key` of object `object`, decoded (malloc'd), or NULL (absent, not a string, or no memory). */
static char * json_text(const struct json * j, size_t object, const char * key, size_t * len) {
    size_t value;
    return json_get(j, object, key, &value) == 1 && j->tokens[value].type == JSON_STRING ? json_string(j, value, len) : NULL;
}

/* The class-set inputs (docs/classes.md): the graph takes them when it has all four as overridable initializers, float32
 * [C, d] and [C]. The metadata's backbone and bridge hashes are what a class file must match. And the abstention
 * score's input mcm_weight (float32 scalar) where the graph has it. */
static int read_head_inputs(struct sb_model * m, const struct json * meta) {
    const OrtApi * api = m->api;
    int rc = SB_OK, found = 0;
    size_t count = 0, backbone;
    OrtAllocator * alloc = NULL;
    ORT_TRY(m, api->GetAllocatorWithDefaultOptions(&alloc), "getting the default allocator");
    ORT_TRY(m, api->SessionGetOverridableInitializerCount(m->session, &count), "reading the model's class-set inputs");
    for (size_t i = 0; i < count; i++) {
        char * name = NULL;
        int k = 0;
        ORT_TRY(m, api->SessionGetOverridableInitializerName(m->session, i, alloc, &name), "reading a class-set input");
        while (k < SB_HEAD_INPUTS && strcmp(name, sb_head_inputs[k]) != 0) k++;
        const bool mcm_weight = strcmp(name, SB_INPUT_MCM_WEIGHT) == 0;
        ort_free(api, alloc, name);
        if (k == SB_HEAD_INPUTS && !mcm_weight) continue;
        OrtTypeInfo * type_info = NULL;
        ONNXTensorElementDataType type;
        size_t ndims = 0;
        int64_t dims[4];
        ORT_TRY(m, api->SessionGetOverridableInitializerTypeInfo(m->session, i, &type_info), "reading a graph input");
        rc = tensor_shape(m, type_info, mcm_weight ? SB_INPUT_MCM_WEIGHT : sb_head_inputs[k], &type, &ndims, dims);
        api->ReleaseTypeInfo(type_info);
        if (rc != SB_OK) goto done;
        if (mcm_weight) {
            if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ndims != 0) {
                rc = fail(m, SB_EMODEL, "the model's input '%s' is not a float32 scalar; re-export it", SB_INPUT_MCM_WEIGHT);
                goto done;
            }
            m->has_mcm_weight = true;
            continue;
        }
        if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ndims != (k < 3 ? 2u : 1u) ||
            (k < 3 && dims[1] > 0 && dims[1] != m->embedding_dim)) {
            rc = fail(m, SB_EMODEL, "the model's class-set input '%s' is not float32 %s; re-export it", sb_head_inputs[k],
                      k < 3 ? "[C, d] with d its embedding width" : "[C]");
            goto done;
        }
        found++;
    }
    m->head_as_data = found == SB_HEAD_INPUTS;
    if (json_get(meta, 0, "backbone", &backbone) == 1) {
        m->backbone = json_text(meta, backbone, "name", NULL);
        m->weights_hash = json_text(meta, backbone, "weights_hash", &m->weights_hash_len);
    }
    m->bridge_hash = json_text(meta, 0, "bridge_hash", &m->bridge_hash_len);
done:
    return rc;
}

/* The metadata's class_names list (what the Python runtime reads) must hold the names of semobridge.class_names. */
static int check_name_list(struct sb_model * m, const struct json * meta) {
    const struct sb_classes * c = m->fitted;
    size_t list = 0, k;
    if (json_get(meta, 0, "class_names", &list) != 1 || meta->tokens[list].type != JSON_ARRAY) {
        return fail(m, SB_EMODEL, "the model's semobridge metadata has no 'class_names' list; re-export it");
    }
    if (meta->tokens[list].count != (size_t) c->count) {
        return fail(m, SB_EMODEL, "the model's metadata lists %zu class names in 'class_names' but %d lines in "
                    "'semobridge.class_names' (a name holds a line break?); re-export it", meta->tokens[list].count, c->count);
    }
    k = list + 1;
    for (int i = 0; i < c->count; i++, k = meta->tokens[k].next) {
        size_t len = 0;
        char * name = NULL;
        if (meta->tokens[k].type == JSON_STRING && !(name = json_string(meta, k, &len))) {
            return fail(m, SB_ENOMEM, "out of memory reading the model's metadata");
        }
        const bool same = name && len == strlen(c->names[i]) && memcmp(name, c->names[i], len) == 0;
        free(name);
        if (!same) {
            return fail(m, SB_EMODEL, "the model's metadata names class %d differently in 'class_names' and in "
                        "'semobridge.class_names'; re-export it", i);
        }
    }
    return SB_OK;
}

static int check_params(struct sb_model * m, struct sb_params p) {
    if (p.intra_op_num_threads < 0 || p.intra_op_num_threads > SB_MAX_THREADS ||
        p.inter_op_num_threads < 0 || p.inter_op_num_threads > SB_MAX_THREADS) {
        return fail(m, SB_EINVAL, "thread counts must be 0..%d (0: ONNX Runtime's default), got intra_op_num_threads=%d "
                    "and inter_op_num_threads=%d", SB_MAX_THREADS, p.intra_op_num_threads, p.inter_op_num_threads);
    }
    if (p.max_side < 0 || p.max_pixels < 0 || !(p.max_aspect == 0 || (p.max_aspect >= 1 && p.max_aspect <= DBL_MAX))) {
        return fail(m, SB_EINVAL, "max_side, max_pixels and max_aspect must be 0 (the model's limit) or at least 1, got "
                    "max_side=%d, max_pixels=%lld and max_aspect=%g; max_aspect is the longest side over the shortest "
                    "(1: square images only)", p.max_side, (long long) p.max_pixels, p.max_aspect);
    }
    if (p.unknown != SB_UNKNOWN_AUTO && p.unknown != SB_UNKNOWN_OFF && p.unknown != SB_UNKNOWN_THRESHOLD) {
        return fail(m, SB_EINVAL, "unknown=%d is not SB_UNKNOWN_AUTO, SB_UNKNOWN_OFF or SB_UNKNOWN_THRESHOLD", (int) p.unknown);
    }
    if (p.unknown == SB_UNKNOWN_THRESHOLD && !(p.unknown_threshold >= 0 && p.unknown_threshold <= 1)) {
        return fail(m, SB_EINVAL, "unknown_threshold=%g is not a threshold in [0, 1] on the model's open-set score (a "
                    "probability); or set unknown to SB_UNKNOWN_AUTO (the model's threshold) or SB_UNKNOWN_OFF",
                    p.unknown_threshold);
    }
    return SB_OK;
}

/* The model's abstention score into m->score (an SB_OPEN_SET_SCORE_NAMES index): its metadata's open_set.score, which a
 * calibrated model names (SB_OPEN_SET_SCORE_DEFAULT without calibration); SB_EMODEL for a score missing or unknown to
 * this library, as semobridge_runtime.openset.OpenSet.from_dict, or one its graph cannot compute. */
static int read_score(struct sb_model * m, const struct json * meta, size_t open_set) {
    size_t value = 0, len = 0;
    char * name = NULL;
    m->score = SB_OPEN_SET_SCORE_DEFAULT;
    if (open_set == 0) return SB_OK;
    if (json_get(meta, open_set, "score", &value) == 1 && meta->tokens[value].type == JSON_STRING &&
        !(name = json_string(meta, value, &len))) {
        return fail(m, SB_ENOMEM, "out of memory reading the model's metadata");
    }
    m->score = classes_score_index(name, len);
    free(name);
    if (m->score < 0) {
        return fail(m, SB_EMODEL, "'%s' names no open-set score this library knows (its metadata's open_set.score is not "
                    "one of %s, %s); update libsemobridge (semobridge-runtime), or re-export the model", m->path,
                    sb_open_set_scores[0], sb_open_set_scores[SB_OPEN_SET_SCORES - 1]);
    }
    if (m->score != SB_OPEN_SET_SCORE_DEFAULT && !m->has_mcm_weight) {
        return fail(m, SB_EMODEL, "'%s' names the open-set score '%s' but its graph has no '%s' input to compute it (an "
                    "export of another version?); re-export it with semobridge-export", m->path,
                    sb_open_set_scores[m->score], SB_INPUT_MCM_WEIGHT);
    }
    return SB_OK;
}

/* The open-set decision in force (sb_params.unknown): whether and what to feed the graph's `threshold`, and the
 * threshold sb_unknown_threshold reports (with SB_UNKNOWN_AUTO the metadata's calibrated one, the graph's default).
 * A model whose graph does not decide runs with unknown off and says so once; one that carries no calibration (T = 1,
 * threshold 0: every image known) too, except with a class set that carries its own (a class file's), as in Python
 * (semobridge_runtime.classifier.unknown_threshold). */
static int read_decision(struct sb_model * m, const struct json * meta, struct sb_params p) {
    size_t open_set = 0, value = 0;
    double calibrated = -1;
    int rc;
    if (json_get(meta, 0, "open_set", &open_set) != 1 || meta->tokens[open_set].type != JSON_OBJECT) open_set = 0;
    if (open_set && json_get(meta, open_set, "threshold", &value) == 1 && !json_double(meta, value, &calibrated)) {
        calibrated = -1;
    }
    if ((rc = read_score(m, meta, open_set)) != SB_OK) return rc;
    m->threshold_in_force = -1;
    m->unknown_auto = p.unknown == SB_UNKNOWN_AUTO;
    m->unknown_given = p.unknown == SB_UNKNOWN_THRESHOLD;
    if (!m->decides && p.unknown == SB_UNKNOWN_THRESHOLD) {
        return fail(m, SB_EMODEL, "'%s' was exported before its graph decided 'unknown': it cannot apply "
                    "unknown_threshold; re-export it with semobridge-export, or open it with SB_UNKNOWN_OFF", m->path);
    }
    if (p.unknown == SB_UNKNOWN_AUTO && !m->decides) {
        fprintf(stderr, "semobridge: '%s' was exported before its graph decided 'unknown': every image gets a class; "
                "re-export the model to answer 'unknown'\n", m->path);
        return SB_OK;
    }
    if (p.unknown == SB_UNKNOWN_AUTO && !(calibrated >= 0 && calibrated <= 1)) {
        fprintf(stderr, "semobridge: '%s' carries no open-set calibration (exported before it existed, or fitted without "
                "held-out images): every image gets a class, and probabilities are uncalibrated (T = 1), unless a class "
                "file brings its own calibration; re-export the model to answer 'unknown'\n", m->path);
        return SB_OK;
    }
    if (p.unknown == SB_UNKNOWN_AUTO) {
        m->threshold_in_force = calibrated;
    } else if (m->decides) {
        m->feed_threshold = true;
        m->threshold = p.unknown == SB_UNKNOWN_OFF ? 0.0f : (float) p.unknown_threshold;
        if (p.unknown == SB_UNKNOWN_THRESHOLD) m->threshold_in_force = p.unknown_threshold;
    }
    return SB_OK;
}

/* Whether class set c carries its own open set (a class file's temperature, threshold and score) that this model
 * applies: its temperature and score always, its threshold with SB_UNKNOWN_AUTO. */
static bool own_open_set(const struct sb_model * m, const struct sb_classes * c) {
    return m->decides && c && !isnan(c->temperature);
}

static int load(struct sb_model * m, const char * path, struct sb_params p) {
    const OrtApi * api;
    int rc = SB_OK;
    OrtSessionOptions * options = NULL;
    OrtCUDAProviderOptionsV2 * cuda = NULL;
    OrtModelMetadata * meta = NULL;
    OrtAllocator * alloc = NULL;
    char * names = NULL;
    char * text = NULL;
    struct json json = {0};
    struct stat st;

    if (!path) return fail(m, SB_EINVAL, "model path is NULL");
    if ((rc = check_params(m, p)) != SB_OK) return rc;
    if (stat(path, &st) != 0) return fail(m, SB_EMODEL, "cannot open model file '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return fail(m, SB_EMODEL, "'%s' is a directory, not a model file", path);
    if (!(m->path = malloc(strlen(path) + 1))) return fail(m, SB_ENOMEM, "out of memory opening the model");
    strcpy(m->path, path);
    pthread_once(&telemetry_once, disable_telemetry);
    m->api = api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    if (!api) {
        return fail(m, SB_ERUNTIME, "ONNX Runtime %s lacks C API version %d; link a newer ONNX Runtime",
                    OrtGetApiBase()->GetVersionString(), ORT_API_VERSION);
    }
    ORT_TRY(m, api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "semobridge", &m->env), "creating the ONNX Runtime env");
    ORT_TRY(m, api->DisableTelemetryEvents(m->env), "disabling ONNX Runtime telemetry");
    ORT_TRY(m, api->CreateSessionOptions(&options), "creating session options");
    ORT_TRY(m, api->SetIntraOpNumThreads(options, p.intra_op_num_threads), "setting intra_op_num_threads");
    ORT_TRY(m, api->SetInterOpNumThreads(options, p.inter_op_num_threads), "setting inter_op_num_threads");
    ORT_TRY(m, api->AddSessionConfigEntry(options, "session.intra_op.allow_spinning", p.allow_spinning ? "1" : "0"),
            "setting allow_spinning");
    ORT_TRY(m, api->SetSessionGraphOptimizationLevel(options, (GraphOptimizationLevel) p.graph_optimization_level),
            "setting graph_optimization_level");
    if (p.use_cuda) {
        char device[16];
        const char * keys[] = {"device_id"};
        const char * values[] = {device};
        snprintf(device, sizeof device, "%d", p.cuda_device_id);
        ORT_TRY(m, api->CreateCUDAProviderOptions(&cuda), "use_cuda: the CUDA execution provider is unavailable");
        ORT_TRY(m, api->UpdateCUDAProviderOptions(cuda, keys, values, 1), "use_cuda: bad cuda_device_id");
        ORT_TRY(m, api->SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda),
                "use_cuda: the CUDA execution provider is unavailable (CPU-only ONNX Runtime? unset use_cuda)");
    }
    {
        OrtStatus * status = api->CreateSession(m->env, path, options, &m->session);
        if (status) { /* the file is there but ONNX Runtime cannot read it: a model error */
            rc = fail(m, SB_EMODEL, "ONNX Runtime cannot load the model (truncated, corrupt or not ONNX?); re-export "
                      "or re-download it: %s", api->GetErrorMessage(status));
            api->ReleaseStatus(status);
            goto done;
        }
    }
    ORT_TRY(m, api->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &m->mem), "creating memory info");
    ORT_TRY(m, api->GetAllocatorWithDefaultOptions(&alloc), "getting the default allocator");
    ORT_TRY(m, api->SessionGetModelMetadata(m->session, &meta), "reading model metadata");
    ORT_TRY(m, api->ModelMetadataLookupCustomMetadataMap(meta, alloc, SB_CLASS_NAMES_KEY, &names),
            "reading model metadata");
    ORT_TRY(m, api->ModelMetadataLookupCustomMetadataMap(meta, alloc, SB_METADATA_KEY, &text), "reading model metadata");
    if (!names || !text) {
        rc = fail(m, SB_EMODEL, "'%s' has no semobridge metadata: not a semobridge export; "
                  "export the model with semobridge", path);
        goto done;
    }
    {
        char why[128];
        const int parsed = json_parse(&json, text, strlen(text), JSON_ALLOW_NONFINITE, why, sizeof why);
        if (parsed != 0 || json.tokens[0].type != JSON_OBJECT) {
            rc = parsed == -2 ? fail(m, SB_ENOMEM, "out of memory reading the model's metadata")
                              : fail(m, SB_EMODEL, "the model's semobridge metadata is not a JSON object (%s); re-export it",
                                     parsed ? why : "another value");
            goto done;
        }
    }
    if ((rc = check_format_version(m, &json)) != SB_OK) goto done;
    {
        char err[SB_ERR_LEN];
        if ((rc = classes_fitted(m, names, &m->fitted, err, sizeof err)) != SB_OK) {
            rc = fail(m, rc, "%s", err);
            goto done;
        }
        classes_retain(m->fitted);
        m->classes = m->fitted;
    }
    if ((rc = check_name_list(m, &json)) != SB_OK) goto done;
    if ((rc = read_input(m, alloc, &json)) != SB_OK || (rc = read_outputs(m, alloc, &json)) != SB_OK ||
        (rc = read_limits(m, &json, p)) != SB_OK || (rc = read_head_inputs(m, &json)) != SB_OK ||
        (rc = read_decision(m, &json, p)) != SB_OK) {
        goto done;
    }
    if (p.classes_path) rc = sb_set_classes(m, p.classes_path);
done:
    json_free(&json);
    ort_free(api, alloc, names);
    ort_free(api, alloc, text);
    if (meta) api->ReleaseModelMetadata(meta);
    if (cuda) api->ReleaseCUDAProviderOptions(cuda);
    if (options) api->ReleaseSessionOptions(options);
    return rc;
}

int sb_load(const char * path, struct sb_params params, struct sb_model ** out, char * err, size_t errlen) {
    int rc;
    struct sb_model * m;
    if (err && errlen > 0) err[0] = '\0';
    if (!out) {
        if (err && errlen > 0) snprintf(err, errlen, "out is NULL: pass the address of a struct sb_model *");
        return SB_EINVAL;
    }
    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m || pthread_mutex_init(&m->err_lock, NULL) != 0) {
        if (err && errlen > 0) snprintf(err, errlen, "out of memory opening the model");
        free(m);
        return SB_ENOMEM;
    }
    if (pthread_mutex_init(&m->classes_lock, NULL) != 0) {
        if (err && errlen > 0) snprintf(err, errlen, "out of memory opening the model");
        pthread_mutex_destroy(&m->err_lock);
        free(m);
        return SB_ENOMEM;
    }
    if ((rc = load(m, path, params)) != SB_OK) {
        if (err && errlen > 0) snprintf(err, errlen, "%s", m->err);
        sb_close(m);
        return rc;
    }
    *out = m;
    return SB_OK;
}

struct sb_model * sb_open_with_error(const char * path, struct sb_params params, char * err, size_t errlen) {
    struct sb_model * m = NULL;
    sb_load(path, params, &m, err, errlen);
    return m;
}

struct sb_model * sb_open(const char * path, struct sb_params params) {
    return sb_open_with_error(path, params, NULL, 0);
}

void sb_close(struct sb_model * m) {
    if (!m) return;
    if (m->api) {
        if (m->mem) m->api->ReleaseMemoryInfo(m->mem);
        if (m->session) m->api->ReleaseSession(m->session);
        if (m->env) m->api->ReleaseEnv(m->env);
    }
    free(m->input_name);
    free(m->path);
    free(m->backbone);
    free(m->weights_hash);
    free(m->bridge_hash);
    classes_release(m->classes);
    classes_release(m->fitted);
    pthread_mutex_destroy(&m->classes_lock);
    pthread_mutex_destroy(&m->err_lock);
    free(m);
}

static int check_uint8(struct sb_model * m) {
    return m->input_uint8 ? SB_OK : fail(m, SB_EMODEL, "this model takes normalised float32 NCHW input (float export); "
                                         "sb_classify/sb_embed need the uint8 export");
}

/* Check n images of h x w against the model's limits and fixed size, before anything is allocated or run. */
static int check_size(struct sb_model * m, int n, int h, int w) {
    const int longest = h > w ? h : w, shortest = h > w ? w : h;
    if (n <= 0 || h <= 0 || w <= 0) return fail(m, SB_EINVAL, "n, h and w must be > 0 (got n=%d h=%d w=%d)", n, h, w);
    if (longest > m->max_side) {
        return fail(m, SB_EINVAL, "images are %dx%d (HxW): the longest side %d exceeds the limit of %lld; crop or "
                    "resize them, or raise sb_params.max_side", h, w, longest, (long long) m->max_side);
    }
    if ((int64_t) h * w > m->max_pixels) {
        return fail(m, SB_EINVAL, "images are %dx%d (HxW): their %lld pixels exceed the limit of %lld; crop or "
                    "resize them, or raise sb_params.max_pixels", h, w, (long long) h * w, (long long) m->max_pixels);
    }
    if ((double) longest > m->max_aspect * (double) shortest) {
        return fail(m, SB_EINVAL, "images are %dx%d (HxW): their aspect ratio %.4g:1 exceeds the limit of %g:1; "
                    "crop or pad them, or raise sb_params.max_aspect", h, w, (double) longest / shortest, m->max_aspect);
    }
    if ((m->height > 0 && h != m->height) || (m->width > 0 && w != m->width)) {
        return fail(m, SB_EINVAL, "images are %dx%d but the model was exported with a fixed size of %lldx%lld; "
                    "resize them", h, w, (long long) m->height, (long long) m->width);
    }
    return SB_OK;
}

/* Check the image arguments shared by sb_classify and sb_embed, before anything is allocated or run. */
static int check_images(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride) {
    size_t bytes;
    int rc;
    if ((rc = check_uint8(m)) != SB_OK) return rc;
    if (!rgb) return fail(m, SB_EINVAL, "rgb is NULL");
    if ((rc = check_size(m, n, h, w)) != SB_OK) return rc;
    if (w > INT_MAX / 3) return fail(m, SB_EINVAL, "w=%d is too large: 3 * w overflows int", w);
    if (stride < 3 * w) {
        return fail(m, SB_EINVAL, "stride=%d is smaller than 3 * w = %d: a row holds w RGB pixels", stride, 3 * w);
    }
    /* stride >= 3 * w, so this also bounds the n * h * w * 3 bytes of the input tensor */
    if (!mul_size((size_t) n, (size_t) h, &bytes) || !mul_size(bytes, (size_t) stride, &bytes) ||
        bytes > (size_t) INT64_MAX) {
        return fail(m, SB_EINVAL, "n * h * stride = %d * %d * %d bytes overflows size_t", n, h, stride);
    }
    return SB_OK;
}

/* Check n frames (struct and geometry, one size for all, the model's limits) and return their size in *h, *w. */
static int check_frames(struct sb_model * m, const struct sb_frame * frames, int n, int * h, int * w) {
    char why[SB_ERR_LEN - 32];
    size_t bytes;
    int rc;
    if ((rc = check_uint8(m)) != SB_OK) return rc;
    if (!frames) return fail(m, SB_EINVAL, "frames is NULL");
    if (n <= 0) return fail(m, SB_EINVAL, "n must be > 0 (got n=%d)", n);
    for (int i = 0; i < n; i++) {
        if (frame_check(&frames[i], why, sizeof why) != SB_OK) return fail(m, SB_EINVAL, "frame %d: %s", i, why);
        if (frames[i].width != frames[0].width || frames[i].height != frames[0].height) {
            return fail(m, SB_EINVAL, "frame %d is %dx%d (WxH) but frame 0 is %dx%d: the frames of one call share their "
                        "size; classify the others in another call", i, frames[i].width, frames[i].height,
                        frames[0].width, frames[0].height);
        }
    }
    *h = frames[0].height;
    *w = frames[0].width;
    if ((rc = check_size(m, n, *h, *w)) != SB_OK) return rc;
    if (!mul_size((size_t) n, (size_t) *h * (size_t) *w, &bytes) || !mul_size(bytes, 3, &bytes) ||
        bytes > (size_t) INT64_MAX) {
        return fail(m, SB_EINVAL, "n * h * w * 3 = %d * %d * %d * 3 bytes overflows size_t", n, *h, *w);
    }
    return SB_OK;
}

/* Copy one run's output values for `count` images into out->dst at image `start`, once its type and whole shape are
 * the ones expected ([rows] or [rows, per_image]): a graph that gives another never has more or less read. */
static int copy_output(struct sb_model * m, OrtValue * value, const struct sb_output * out,
                       int64_t rows, int start, int count) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    OrtTensorTypeAndShapeInfo * info = NULL;
    ONNXTensorElementDataType type;
    size_t ndims = 0;
    int64_t dims[2] = {0, 1};
    void * data = NULL;

    ORT_TRY(m, api->GetTensorTypeAndShape(value, &info), "reading an output");
    ORT_TRY(m, api->GetTensorElementType(info, &type), "reading an output");
    ORT_TRY(m, api->GetDimensionsCount(info, &ndims), "reading an output");
    if (ndims == out->rank) ORT_TRY(m, api->GetDimensions(info, dims, ndims), "reading an output");
    if (type != out->type || ndims != out->rank || dims[0] != rows || dims[1] < 0 || (size_t) dims[1] != out->per_image) {
        char want[48], got[48];
        if (out->rank == 1) snprintf(want, sizeof want, "[%lld]", (long long) rows);
        else snprintf(want, sizeof want, "[%lld, %zu]", (long long) rows, out->per_image);
        if (ndims != out->rank) snprintf(got, sizeof got, "of %zu dims", ndims);
        else if (ndims == 1) snprintf(got, sizeof got, "[%lld]", (long long) dims[0]);
        else snprintf(got, sizeof got, "[%lld, %lld]", (long long) dims[0], (long long) dims[1]);
        rc = fail(m, SB_EMODEL, "output '%s' is %s with element type %d, expected %s with element type %d; re-export the "
                  "model", out->name, got, (int) type, want, (int) out->type);
        goto done;
    }
    ORT_TRY(m, api->GetTensorMutableData(value, &data), "reading an output");
    memcpy((char *) out->dst + (size_t) start * out->per_image * out->elem_size, data,
           (size_t) count * out->per_image * out->elem_size);
done:
    if (info) api->ReleaseTensorTypeAndShapeInfo(info);
    return rc;
}

/* The inputs of a class set with values: its four tensors, over its memory (ORT does not write to inputs). */
static int class_inputs(struct sb_model * m, const struct sb_classes * c, OrtValue * values[SB_HEAD_INPUTS]) {
    int rc = SB_OK;
    for (int k = 0; k < SB_HEAD_INPUTS; k++) {
        const int64_t shape[2] = {c->count, k < 3 ? c->dim : 1};
        const size_t rows = (size_t) c->count * (size_t) c->dim;
        ORT_TRY(m, m->api->CreateTensorWithDataAsOrtValue(m->mem, c->values + (size_t) k * rows,
                                                         sizeof(float) * (k < 3 ? rows : (size_t) c->count), shape,
                                                         k < 3 ? 2 : 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &values[k]),
                "creating a class-set input");
    }
done:
    return rc;
}

/* Images to run: packed-RGB rows `stride` apart from rgb (sb_classify), or frames (sb_classify_frames). */
struct sb_images {
    const uint8_t * rgb;
    int stride;
    const struct sb_frame * frames;
};

/* Run the model over n images in chunks of the model's static batch (or all at once), fed class set c if it has values
 * (else the graph's defaults, the fitted classes). Packed RGB is used in place; anything else is converted into one
 * batch buffer. */
static int run(struct sb_model * m, const struct sb_classes * c, const struct sb_images * images, int n, int h, int w,
               const struct sb_output * outs, size_t nouts) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    const char * input_names[4 + SB_HEAD_INPUTS] = {m->input_name};
    OrtValue * inputs[4 + SB_HEAD_INPUTS] = {NULL};
    /* the open set: the class set's own temperature and score (class files), and threshold with SB_UNKNOWN_AUTO, where
     * it has one; the model's score otherwise (fed always where the graph takes it: run(NULL) embeds only) */
    const bool own_t = own_open_set(m, c);
    const bool own_threshold = own_t && m->unknown_auto;
    const float temperature = own_t ? (float) c->temperature : 1.0f;
    const float threshold = own_threshold ? (float) c->threshold : m->threshold;
    /* a score's index is its weight (contract.h); the caller's own threshold stays on the model's score */
    const float mcm_weight = (float) (own_t && !m->unknown_given ? c->score : m->score);
    const size_t nclass = c && c->values ? 1 + SB_HEAD_INPUTS : 1;
    const size_t nthreshold = nclass + (own_t ? 1 : 0);
    const size_t nweight = nthreshold + (m->feed_threshold || own_threshold ? 1 : 0);
    const size_t ninputs = nweight + (m->has_mcm_weight && c ? 1 : 0);
    const int chunk = m->batch > 0 && m->batch < n ? (int) m->batch : n;
    const int64_t rows = m->batch > 0 ? m->batch : chunk; /* images per run, padding included */
    const size_t image_bytes = (size_t) h * (size_t) w * 3, row_bytes = (size_t) w * 3;
    size_t input_bytes, total;
    uint8_t * buffer = NULL;
    const char * names[SB_MAX_OUTPUTS];
    OrtValue * input = NULL;
    OrtValue * outputs[SB_MAX_OUTPUTS] = {NULL};
    const int64_t shape[4] = {rows, h, w, 3};

    for (size_t k = 0; k < nouts; k++) {
        names[k] = outs[k].name;
        if (!mul_size((size_t) n, outs[k].per_image, &total)) return fail(m, SB_EINVAL, "n=%d is too large", n);
    }
    if (!mul_size((size_t) rows, image_bytes, &input_bytes)) return fail(m, SB_EINVAL, "batch is too large");
    for (size_t k = 1; k < nclass; k++) input_names[k] = sb_head_inputs[k - 1];
    if (nclass > 1 && (rc = class_inputs(m, c, inputs + 1)) != SB_OK) goto done;
    if (own_t) { /* float32 scalars over these locals (ORT does not write to inputs) */
        input_names[nclass] = SB_INPUT_TEMPERATURE;
        ORT_TRY(m, api->CreateTensorWithDataAsOrtValue(m->mem, (void *) &temperature, sizeof(float), NULL, 0,
                                                        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[nclass]),
                "creating the temperature input");
    }
    if (nweight > nthreshold) {
        input_names[nthreshold] = SB_INPUT_THRESHOLD;
        ORT_TRY(m, api->CreateTensorWithDataAsOrtValue(m->mem, (void *) &threshold, sizeof(float), NULL, 0,
                                                        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[nthreshold]),
                "creating the threshold input");
    }
    if (ninputs > nweight) {
        input_names[nweight] = SB_INPUT_MCM_WEIGHT;
        ORT_TRY(m, api->CreateTensorWithDataAsOrtValue(m->mem, (void *) &mcm_weight, sizeof(float), NULL, 0,
                                                        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[nweight]),
                "creating the mcm_weight input");
    }
    for (int start = 0; start < n; start += chunk) {
        const int count = n - start < chunk ? n - start : chunk;
        const struct sb_frame * frames = images->frames ? images->frames + start : NULL;
        const size_t stride = (size_t) images->stride;
        const uint8_t * first = frames ? frames[0].data[0] : images->rgb + (size_t) start * (size_t) h * stride;
        void * data = (void *) first; /* used in place when packed; ORT does not write to inputs */
        if (frames ? count != 1 || rows != 1 || !frame_is_packed_rgb(frames) : stride != row_bytes || count != rows) {
            if (!buffer && !(buffer = malloc(input_bytes))) {
                rc = fail(m, SB_ENOMEM, "out of memory for a %zu-byte input batch", input_bytes);
                goto done;
            }
            for (size_t i = 0; frames && i < (size_t) count; i++) frame_to_rgb(&frames[i], buffer + i * image_bytes);
            for (size_t r = 0; !frames && r < (size_t) count * (size_t) h; r++) {
                memcpy(buffer + r * row_bytes, first + r * stride, row_bytes);
            }
            memset(buffer + (size_t) count * image_bytes, 0, input_bytes - (size_t) count * image_bytes);
            data = buffer;
        }
        ORT_TRY(m, api->CreateTensorWithDataAsOrtValue(m->mem, data, input_bytes, shape, 4,
                                                        ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, &input),
                "creating the input tensor");
        inputs[0] = input;
        ORT_TRY(m, api->Run(m->session, NULL, input_names, (const OrtValue * const *) inputs, ninputs, names, nouts,
                            outputs),
                "running the model");
        for (size_t k = 0; k < nouts && rc == SB_OK; k++) rc = copy_output(m, outputs[k], &outs[k], rows, start, count);
        api->ReleaseValue(input);
        input = NULL;
        for (size_t k = 0; k < nouts; k++) {
            api->ReleaseValue(outputs[k]);
            outputs[k] = NULL;
        }
        if (rc != SB_OK) goto done;
    }
done:
    if (input) api->ReleaseValue(input);
    for (size_t k = 1; k < ninputs; k++) {
        if (inputs[k]) api->ReleaseValue(inputs[k]);
    }
    for (size_t k = 0; k < nouts; k++) {
        if (outputs[k]) api->ReleaseValue(outputs[k]);
    }
    free(buffer);
    return rc;
}

/* The current class set, one reference taken (release it with classes_release). */
static struct sb_classes * current(const struct sb_model * model) {
    struct sb_model * m = (struct sb_model *) model; /* the lock is not part of the model's value */
    pthread_mutex_lock(&m->classes_lock);
    struct sb_classes * c = m->classes;
    classes_retain(c);
    pthread_mutex_unlock(&m->classes_lock);
    return c;
}

/* Make c (whose reference the model takes over) the current class set; the old one goes with its last reader. */
static void publish(struct sb_model * m, struct sb_classes * c) {
    pthread_mutex_lock(&m->classes_lock);
    struct sb_classes * old = m->classes;
    m->classes = c;
    pthread_mutex_unlock(&m->classes_lock);
    classes_release(old);
}

int sb_set_classes(struct sb_model * m, const char * path) {
    struct sb_classes * c = NULL;
    char err[SB_ERR_LEN];
    int rc;
    if (!m) return SB_EINVAL;
    if (!path) {
        classes_retain(m->fitted);
        publish(m, m->fitted);
        return SB_OK;
    }
    if (!m->head_as_data) {
        return fail(m, SB_EMODEL, "'%s' has its classes baked in; re-export it with semobridge-export to change them",
                    m->path);
    }
    if (!m->weights_hash || !m->bridge_hash || !m->backbone) {
        return fail(m, SB_EMODEL, "'%s' was exported before class sets existed (its metadata has no backbone weights "
                    "and bridge hashes); re-export it with semobridge-export to change its classes", m->path);
    }
    const struct class_identity id = {m->backbone, m->weights_hash, m->weights_hash_len, m->bridge_hash,
                                      m->bridge_hash_len, m->embedding_dim};
    if ((rc = classes_read(m, path, &id, &c, err, sizeof err)) != SB_OK) return fail(m, rc, "%s", err);
    if (own_open_set(m, c) && c->score != SB_OPEN_SET_SCORE_DEFAULT && !m->has_mcm_weight) {
        rc = fail(m, SB_EMODEL, "class file '%s' is calibrated on the open-set score '%s', which the graph of '%s' cannot "
                  "compute (no '%s' input); re-export the model with semobridge-export", path,
                  sb_open_set_scores[c->score], m->path, SB_INPUT_MCM_WEIGHT);
        classes_release(c);
        return rc;
    }
    publish(m, c);
    return SB_OK;
}

struct sb_classes * sb_get_classes(struct sb_model * m) { return m ? current(m) : NULL; }

void sb_release_classes(struct sb_classes * classes) { classes_release(classes); }

int sb_classes_count(const struct sb_classes * classes) { return classes ? classes->count : -1; }

const char * sb_classes_score(const struct sb_classes * classes) {
    return classes && classes->score >= 0 ? sb_open_set_scores[classes->score] : NULL;
}

int sb_classes_open_set(const struct sb_classes * classes, double * temperature, double * threshold) {
    if (!classes) return -1;
    if (isnan(classes->temperature)) return 0;
    if (temperature) *temperature = classes->temperature;
    if (threshold) *threshold = classes->threshold;
    return 1;
}

const char * sb_classes_name(const struct sb_classes * classes, int i) {
    return classes && i >= 0 && i < classes->count ? classes->names[i] : NULL;
}

/* Run the model once for the outputs `r` asks for; an image the graph decides is not known gets label -1. A graph
 * exported before it computed open_set_score decides on the top probability (max_probability): that is its score, as
 * semobridge_runtime's Classifier gives it (openset.abstention_score). */
static int predict(struct sb_model * m, const struct sb_classes * c, const struct sb_images * images, int n, int h,
                   int w, const struct sb_result * r) {
    struct sb_output outs[SB_MAX_OUTPUTS];
    size_t k = 0;
    uint8_t * known = NULL; /* ONNX bool: one byte per image */
    float * probabilities = r->probabilities;
    const bool top = r->open_set_score && !m->scores_open_set; /* the score from the probabilities */
    size_t values = 0;
    int rc;
    if (!r->scores && !r->labels && !r->probabilities && !r->embeddings && !r->open_set_score) {
        return fail(m, SB_EINVAL, "the result asks for nothing: set scores, labels, probabilities, embeddings or "
                    "open_set_score");
    }
    if (r->probabilities && !m->decides) {
        return fail(m, SB_EMODEL, "'%s' was exported before its graph computed probabilities; re-export it with "
                    "semobridge-export", m->path);
    }
    if (r->open_set_score && !m->decides) {
        return fail(m, SB_EMODEL, "'%s' was exported before its graph computed the open-set decision; re-export it with "
                    "semobridge-export", m->path);
    }
    if (top && !probabilities && (!mul_size((size_t) n, (size_t) c->count, &values) || values > SIZE_MAX / sizeof(float) ||
                                  !(probabilities = malloc(values * sizeof(float))))) {
        return fail(m, SB_ENOMEM, "out of memory for %d x %d probabilities", n, c->count);
    }
    if (r->labels && m->decides && !(known = malloc((size_t) n))) {
        if (probabilities != r->probabilities) free(probabilities);
        return fail(m, SB_ENOMEM, "out of memory");
    }
    if (r->scores) outs[k++] = (struct sb_output){SB_OUTPUT_SCORES, r->scores, (size_t) c->count, sizeof(float),
                                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2};
    if (r->labels) outs[k++] = (struct sb_output){SB_OUTPUT_LABEL, r->labels, 1, sizeof(int64_t),
                                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 1};
    if (known) outs[k++] = (struct sb_output){SB_OUTPUT_KNOWN, known, 1, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, 1};
    if (probabilities) outs[k++] = (struct sb_output){SB_OUTPUT_PROBABILITIES, probabilities, (size_t) c->count,
                                                      sizeof(float), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2};
    if (r->embeddings) outs[k++] = (struct sb_output){SB_OUTPUT_EMBEDDING, r->embeddings, (size_t) m->embedding_dim,
                                                      sizeof(float), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2};
    if (r->open_set_score && !top) outs[k++] = (struct sb_output){SB_OUTPUT_OPEN_SET_SCORE, r->open_set_score, 1,
                                                                  sizeof(float), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 1};
    rc = run(m, c, images, n, h, w, outs, k);
    for (int i = 0; rc == SB_OK && known && i < n; i++) {
        if (!known[i]) r->labels[i] = -1;
    }
    for (size_t i = 0; rc == SB_OK && top && i < (size_t) n; i++) {
        const float * row = probabilities + i * (size_t) c->count;
        float best = row[0];
        for (int j = 1; j < c->count; j++) best = row[j] > best ? row[j] : best;
        r->open_set_score[i] = best;
    }
    if (probabilities != r->probabilities) free(probabilities);
    free(known);
    return rc;
}

static int classify(struct sb_model * m, const struct sb_classes * c, const uint8_t * rgb, int n, int h, int w,
                    int stride, float * scores_out, int64_t * labels_out) {
    int rc;
    if ((rc = check_images(m, rgb, n, h, w, stride)) != SB_OK) return rc;
    if (!scores_out || !labels_out) return fail(m, SB_EINVAL, "scores_out and labels_out must not be NULL");
    const struct sb_result r = {.scores = scores_out, .labels = labels_out};
    const struct sb_images images = {rgb, stride, NULL};
    return predict(m, c, &images, n, h, w, &r);
}

int sb_classify(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride,
                float * scores_out, int64_t * labels_out) {
    if (!m) return SB_EINVAL;
    struct sb_classes * c = current(m); /* one class set for the whole call */
    const int rc = classify(m, c, rgb, n, h, w, stride, scores_out, labels_out);
    classes_release(c);
    return rc;
}

/* A class set for sb_classify_with and sb_classify_frames_with: not NULL, and the model's own. */
static int check_set(struct sb_model * m, const struct sb_classes * classes) {
    if (!classes) return fail(m, SB_EINVAL, "classes is NULL: pass a class set from sb_get_classes(model)");
    if (classes->owner != m) {
        return fail(m, SB_EINVAL, "this class set belongs to another model: take one from sb_get_classes(model)");
    }
    return SB_OK;
}

int sb_classify_with(struct sb_model * m, const struct sb_classes * classes, const uint8_t * rgb, int n, int h, int w,
                     int stride, float * scores_out, int64_t * labels_out) {
    int rc;
    if (!m) return SB_EINVAL;
    if ((rc = check_set(m, classes)) != SB_OK) return rc;
    return classify(m, classes, rgb, n, h, w, stride, scores_out, labels_out);
}

int sb_embed(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride, float * emb_out) {
    int rc;
    if (!m) return SB_EINVAL;
    if ((rc = check_images(m, rgb, n, h, w, stride)) != SB_OK) return rc;
    if (!emb_out) return fail(m, SB_EINVAL, "emb_out must not be NULL");
    const struct sb_output out = {SB_OUTPUT_EMBEDDING, emb_out, (size_t) m->embedding_dim, sizeof(float),
                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2};
    const struct sb_images images = {rgb, stride, NULL};
    return run(m, NULL, &images, n, h, w, &out, 1); /* the embedding does not depend on the class set */
}

static int classify_frames(struct sb_model * m, const struct sb_classes * c, const struct sb_frame * frames, int n,
                           float * scores_out, int64_t * labels_out) {
    int rc, h = 0, w = 0;
    if ((rc = check_frames(m, frames, n, &h, &w)) != SB_OK) return rc;
    if (!scores_out || !labels_out) return fail(m, SB_EINVAL, "scores_out and labels_out must not be NULL");
    const struct sb_result r = {.scores = scores_out, .labels = labels_out};
    const struct sb_images images = {NULL, 0, frames};
    return predict(m, c, &images, n, h, w, &r);
}

int sb_classify_frames(struct sb_model * m, const struct sb_frame * frames, int n, float * scores_out,
                       int64_t * labels_out) {
    if (!m) return SB_EINVAL;
    struct sb_classes * c = current(m); /* one class set for the whole call */
    const int rc = classify_frames(m, c, frames, n, scores_out, labels_out);
    classes_release(c);
    return rc;
}

int sb_classify_frames_with(struct sb_model * m, const struct sb_classes * classes, const struct sb_frame * frames,
                            int n, float * scores_out, int64_t * labels_out) {
    int rc;
    if (!m) return SB_EINVAL;
    if ((rc = check_set(m, classes)) != SB_OK) return rc;
    return classify_frames(m, classes, frames, n, scores_out, labels_out);
}

int sb_predict(struct sb_model * m, const struct sb_classes * classes, const struct sb_frame * frames, int n,
               const struct sb_result * result) {
    int rc, h = 0, w = 0;
    if (!m) return SB_EINVAL;
    if (classes && (rc = check_set(m, classes)) != SB_OK) return rc;
    if ((rc = check_frames(m, frames, n, &h, &w)) != SB_OK) return rc;
    if (!result) return fail(m, SB_EINVAL, "result is NULL: pass a struct sb_result with the outputs wanted");
    struct sb_classes * c = classes ? NULL : current(m); /* one class set for the whole call */
    const struct sb_images images = {NULL, 0, frames};
    rc = predict(m, classes ? classes : c, &images, n, h, w, result);
    classes_release(c);
    return rc;
}

double sb_unknown_threshold(const struct sb_model * m) {
    if (!m) return -2;
    struct sb_classes * c = current(m);
    const double threshold = own_open_set(m, c) && m->unknown_auto ? c->threshold : m->threshold_in_force;
    classes_release(c);
    return threshold;
}

const char * sb_unknown_score(const struct sb_model * m) {
    if (!m) return NULL;
    struct sb_classes * c = current(m);
    const int score = own_open_set(m, c) && !m->unknown_given ? c->score : m->score;
    classes_release(c);
    return sb_open_set_scores[score];
}

int sb_embed_frames(struct sb_model * m, const struct sb_frame * frames, int n, float * emb_out) {
    int rc, h = 0, w = 0;
    if (!m) return SB_EINVAL;
    if ((rc = check_frames(m, frames, n, &h, &w)) != SB_OK) return rc;
    if (!emb_out) return fail(m, SB_EINVAL, "emb_out must not be NULL");
    const struct sb_output out = {SB_OUTPUT_EMBEDDING, emb_out, (size_t) m->embedding_dim, sizeof(float),
                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 2};
    const struct sb_images images = {NULL, 0, frames};
    return run(m, NULL, &images, n, h, w, &out, 1);
}

int sb_num_classes(const struct sb_model * m) {
    if (!m) return -1;
    struct sb_classes * c = current(m);
    const int count = c->count;
    classes_release(c);
    return count;
}

int sb_embedding_dim(const struct sb_model * m) { return m ? m->embedding_dim : -1; }

const char * sb_class_name(const struct sb_model * m, int i) {
    if (!m) return NULL;
    struct sb_classes * c = current(m);
    const char * name = i >= 0 && i < c->count ? c->names[i] : NULL; /* valid while the model holds c (see the header) */
    classes_release(c);
    return name;
}

const char * sb_last_error(const struct sb_model * m) { return m ? m->err : "model is NULL"; }
