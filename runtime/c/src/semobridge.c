/* semobridge.c - the semobridge C library over ONNX Runtime's C API. See semobridge.h. */
#include "semobridge.h"

#include <errno.h>
#include <limits.h>
#include <onnxruntime_c_api.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SB_ERR_LEN 512
#define SB_MAX_OUTPUTS 2

struct sb_model {
    const OrtApi * api;
    OrtEnv * env;
    OrtSession * session;
    OrtMemoryInfo * mem;
    char * input_name;
    bool input_uint8;
    int64_t batch, height, width; /* static input dims, or -1 when dynamic */
    char * names_buf;             /* class names, each NUL-terminated */
    char ** names;
    int num_classes;
    int embedding_dim;
    pthread_mutex_t err_lock;
    char err[SB_ERR_LEN];
};

/* One output to copy back from a run: name, destination, values per image, element size and type. */
struct sb_output {
    const char * name;
    void * dst;
    size_t per_image;
    size_t elem_size;
    ONNXTensorElementDataType type;
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

struct sb_params sb_default_params(void) {
    struct sb_params p = {
        .intra_op_num_threads = 0,
        .inter_op_num_threads = 0,
        .use_cuda = false,
        .cuda_device_id = 0,
        .graph_optimization_level = SB_GRAPH_OPT_ALL,
        .allow_spinning = true,
    };
    return p;
}

/* Split the '\n'-joined class names into m->names. */
static int parse_names(struct sb_model * m, const char * joined) {
    size_t len = strlen(joined);
    int count = 1;
    for (size_t i = 0; i < len; i++) count += joined[i] == '\n';
    if (len == 0) return fail(m, SB_EMODEL, "the model's semobridge.class_names metadata is empty; re-export it");
    m->names_buf = malloc(len + 1);
    m->names = malloc(sizeof(char *) * (size_t) count);
    if (!m->names_buf || !m->names) return fail(m, SB_ENOMEM, "out of memory reading class names");
    memcpy(m->names_buf, joined, len + 1);
    m->names[0] = m->names_buf;
    for (size_t i = 0, k = 1; i < len; i++) {
        if (m->names_buf[i] == '\n') {
            m->names_buf[i] = '\0';
            m->names[k++] = m->names_buf + i + 1;
        }
    }
    m->num_classes = count;
    return SB_OK;
}

/* Read the single input's name, element type and static dims. */
static int read_input(struct sb_model * m, OrtAllocator * alloc) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    size_t count = 0, ndims = 0;
    char * name = NULL;
    OrtTypeInfo * type_info = NULL;
    const OrtTensorTypeAndShapeInfo * tensor_info = NULL;
    ONNXTensorElementDataType type;
    int64_t dims[4];

    ORT_TRY(m, api->SessionGetInputCount(m->session, &count), "reading the model's inputs");
    if (count != 1) { rc = fail(m, SB_EMODEL, "the model has %zu inputs, expected 1 (image); re-export it", count); goto done; }
    ORT_TRY(m, api->SessionGetInputName(m->session, 0, alloc, &name), "reading the input name");
    m->input_name = malloc(strlen(name) + 1);
    if (!m->input_name) { rc = fail(m, SB_ENOMEM, "out of memory"); goto done; }
    strcpy(m->input_name, name);
    ORT_TRY(m, api->SessionGetInputTypeInfo(m->session, 0, &type_info), "reading the input type");
    ORT_TRY(m, api->CastTypeInfoToTensorInfo(type_info, &tensor_info), "reading the input type");
    if (!tensor_info) { rc = fail(m, SB_EMODEL, "the model input is not a tensor; re-export it"); goto done; }
    ORT_TRY(m, api->GetTensorElementType(tensor_info, &type), "reading the input type");
    ORT_TRY(m, api->GetDimensionsCount(tensor_info, &ndims), "reading the input shape");
    if (ndims != 4) { rc = fail(m, SB_EMODEL, "the model input has %zu dims, expected 4; re-export it", ndims); goto done; }
    ORT_TRY(m, api->GetDimensions(tensor_info, dims, 4), "reading the input shape");
    m->input_uint8 = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    if (m->input_uint8 && dims[3] != 3) {
        rc = fail(m, SB_EMODEL, "the model input is not [N,H,W,3] RGB; re-export it");
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

/* Find output `name`; store its dim 1 (or -1 if dynamic/absent) in *width. */
static int output_width(struct sb_model * m, OrtAllocator * alloc, const char * name, int64_t * width) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
    size_t count = 0, ndims = 0;
    OrtTypeInfo * type_info = NULL;
    const OrtTensorTypeAndShapeInfo * tensor_info = NULL;
    int64_t dims[2] = {-1, -1};
    bool found = false;

    ORT_TRY(m, api->SessionGetOutputCount(m->session, &count), "reading the model's outputs");
    for (size_t i = 0; i < count && !found; i++) {
        char * out_name = NULL;
        ORT_TRY(m, api->SessionGetOutputName(m->session, i, alloc, &out_name), "reading an output name");
        found = strcmp(out_name, name) == 0;
        ort_free(api, alloc, out_name);
        if (!found) continue;
        ORT_TRY(m, api->SessionGetOutputTypeInfo(m->session, i, &type_info), "reading an output type");
        ORT_TRY(m, api->CastTypeInfoToTensorInfo(type_info, &tensor_info), "reading an output type");
        if (tensor_info) {
            ORT_TRY(m, api->GetDimensionsCount(tensor_info, &ndims), "reading an output shape");
            if (ndims == 2) ORT_TRY(m, api->GetDimensions(tensor_info, dims, 2), "reading an output shape");
        }
    }
    if (!found) { rc = fail(m, SB_EMODEL, "the model has no '%s' output; re-export it with semobridge", name); goto done; }
    *width = dims[1];
done:
    if (type_info) api->ReleaseTypeInfo(type_info);
    return rc;
}

/* Integer value of "key": in the semobridge JSON metadata, or -1. */
static long json_int(const char * json, const char * key) {
    const char * p = json ? strstr(json, key) : NULL;
    if (!p) return -1;
    p += strlen(key);
    while (*p == ' ' || *p == '"' || *p == ':') p++;
    return strtol(p, NULL, 10);
}

static int read_outputs(struct sb_model * m, OrtAllocator * alloc, OrtModelMetadata * meta) {
    int rc;
    int64_t scores_width = -1, embedding_width = -1, unused = -1;
    char * json = NULL;
    if ((rc = output_width(m, alloc, "scores", &scores_width)) != SB_OK) return rc;
    if ((rc = output_width(m, alloc, "label", &unused)) != SB_OK) return rc;
    if ((rc = output_width(m, alloc, "embedding", &embedding_width)) != SB_OK) return rc;
    if (scores_width > 0 && scores_width != m->num_classes) {
        return fail(m, SB_EMODEL, "the model's scores have %lld classes but its metadata names %d; re-export it",
                    (long long) scores_width, m->num_classes);
    }
    if (embedding_width <= 0) { /* dynamic in the graph: take it from the JSON metadata */
        ORT_TRY(m, m->api->ModelMetadataLookupCustomMetadataMap(meta, alloc, "semobridge", &json), "reading metadata");
        embedding_width = json_int(json, "\"embedding_dim\"");
    }
    if (embedding_width <= 0 || embedding_width > INT_MAX) {
        rc = fail(m, SB_EMODEL, "cannot tell the model's embedding size; re-export it");
        goto done;
    }
    m->embedding_dim = (int) embedding_width;
done:
    ort_free(m->api, alloc, json);
    return rc;
}

static int load(struct sb_model * m, const char * path, struct sb_params p) {
    const OrtApi * api;
    int rc = SB_OK;
    OrtSessionOptions * options = NULL;
    OrtCUDAProviderOptionsV2 * cuda = NULL;
    OrtModelMetadata * meta = NULL;
    OrtAllocator * alloc = NULL;
    char * names = NULL;
    FILE * f;

    if (!path) return fail(m, SB_EINVAL, "model path is NULL");
    if (p.intra_op_num_threads < 0 || p.inter_op_num_threads < 0) {
        return fail(m, SB_EINVAL, "thread counts must be >= 0 (0: ONNX Runtime's default)");
    }
    if (!(f = fopen(path, "rb"))) return fail(m, SB_EINVAL, "cannot open model file '%s': %s", path, strerror(errno));
    fclose(f);
    m->api = api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    if (!api) {
        return fail(m, SB_ERUNTIME, "ONNX Runtime %s lacks C API version %d; link a newer ONNX Runtime",
                    OrtGetApiBase()->GetVersionString(), ORT_API_VERSION);
    }
    ORT_TRY(m, api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "semobridge", &m->env), "creating the ONNX Runtime env");
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
    ORT_TRY(m, api->CreateSession(m->env, path, options, &m->session),
            "ONNX Runtime cannot load the model (truncated, corrupt or not ONNX?)");
    ORT_TRY(m, api->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &m->mem), "creating memory info");
    ORT_TRY(m, api->GetAllocatorWithDefaultOptions(&alloc), "getting the default allocator");
    ORT_TRY(m, api->SessionGetModelMetadata(m->session, &meta), "reading model metadata");
    ORT_TRY(m, api->ModelMetadataLookupCustomMetadataMap(meta, alloc, "semobridge.class_names", &names),
            "reading model metadata");
    if (!names) {
        rc = fail(m, SB_EMODEL, "'%s' has no semobridge.class_names metadata: not a semobridge export; "
                  "export the model with semobridge", path);
        goto done;
    }
    if ((rc = parse_names(m, names)) != SB_OK) goto done;
    if ((rc = read_input(m, alloc)) != SB_OK) goto done;
    rc = read_outputs(m, alloc, meta);
done:
    ort_free(api, alloc, names);
    if (meta) api->ReleaseModelMetadata(meta);
    if (cuda) api->ReleaseCUDAProviderOptions(cuda);
    if (options) api->ReleaseSessionOptions(options);
    return rc;
}

struct sb_model * sb_open_with_error(const char * path, struct sb_params params, char * err, size_t errlen) {
    struct sb_model * m = calloc(1, sizeof *m);
    if (err && errlen > 0) err[0] = '\0';
    if (!m || pthread_mutex_init(&m->err_lock, NULL) != 0) {
        if (err && errlen > 0) snprintf(err, errlen, "out of memory opening the model");
        free(m);
        return NULL;
    }
    if (load(m, path, params) != SB_OK) {
        if (err && errlen > 0) snprintf(err, errlen, "%s", m->err);
        sb_close(m);
        return NULL;
    }
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
    free(m->names);
    free(m->names_buf);
    pthread_mutex_destroy(&m->err_lock);
    free(m);
}

/* Check the image arguments shared by sb_classify and sb_embed. */
static int check_images(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride) {
    size_t bytes;
    if (!m->input_uint8) {
        return fail(m, SB_EMODEL, "this model takes normalised float32 NCHW input (float export); "
                    "sb_classify/sb_embed need the uint8 export");
    }
    if (!rgb) return fail(m, SB_EINVAL, "rgb is NULL");
    if (n <= 0 || h <= 0 || w <= 0) return fail(m, SB_EINVAL, "n, h and w must be > 0 (got n=%d h=%d w=%d)", n, h, w);
    if (w > INT_MAX / 3) return fail(m, SB_EINVAL, "w=%d is too large: 3 * w overflows int", w);
    if (stride < 3 * w) {
        return fail(m, SB_EINVAL, "stride=%d is smaller than 3 * w = %d: a row holds w RGB pixels", stride, 3 * w);
    }
    if ((m->height > 0 && h != m->height) || (m->width > 0 && w != m->width)) {
        return fail(m, SB_EINVAL, "images are %dx%d but the model was exported with a fixed size of %lldx%lld; "
                    "resize them", h, w, (long long) m->height, (long long) m->width);
    }
    if (!mul_size((size_t) n, (size_t) h, &bytes) || !mul_size(bytes, (size_t) stride, &bytes) ||
        bytes > (size_t) INT64_MAX) {
        return fail(m, SB_EINVAL, "n * h * stride = %d * %d * %d bytes overflows size_t", n, h, stride);
    }
    return SB_OK;
}

/* Copy one run's output values for `count` images into out->dst at image `start`. */
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
    if (ndims == 1 || ndims == 2) ORT_TRY(m, api->GetDimensions(info, dims, ndims), "reading an output");
    if (type != out->type || dims[0] != rows || (size_t) dims[1] != out->per_image) {
        rc = fail(m, SB_EMODEL, "output '%s' has an unexpected type or shape; re-export the model", out->name);
        goto done;
    }
    ORT_TRY(m, api->GetTensorMutableData(value, &data), "reading an output");
    memcpy((char *) out->dst + (size_t) start * out->per_image * out->elem_size, data,
           (size_t) count * out->per_image * out->elem_size);
done:
    if (info) api->ReleaseTensorTypeAndShapeInfo(info);
    return rc;
}

/* Run the model over n images in chunks of the model's static batch (or all at once). */
static int run(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride,
               const struct sb_output * outs, size_t nouts) {
    const OrtApi * api = m->api;
    int rc = SB_OK;
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
    for (int start = 0; start < n; start += chunk) {
        const int count = n - start < chunk ? n - start : chunk;
        const uint8_t * first = rgb + (size_t) start * (size_t) h * (size_t) stride;
        void * data = (void *) first; /* used in place when packed; ORT does not write to inputs */
        if (stride != 3 * w || count != rows) {
            if (!buffer && !(buffer = malloc(input_bytes))) {
                rc = fail(m, SB_ENOMEM, "out of memory for a %zu-byte input batch", input_bytes);
                goto done;
            }
            for (size_t r = 0; r < (size_t) count * (size_t) h; r++) {
                memcpy(buffer + r * row_bytes, first + r * (size_t) stride, row_bytes);
            }
            memset(buffer + (size_t) count * image_bytes, 0, input_bytes - (size_t) count * image_bytes);
            data = buffer;
        }
        ORT_TRY(m, api->CreateTensorWithDataAsOrtValue(m->mem, data, input_bytes, shape, 4,
                                                        ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, &input),
                "creating the input tensor");
        ORT_TRY(m, api->Run(m->session, NULL, (const char * const *) &m->input_name,
                            (const OrtValue * const *) &input, 1, names, nouts, outputs),
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
    for (size_t k = 0; k < nouts; k++) {
        if (outputs[k]) api->ReleaseValue(outputs[k]);
    }
    free(buffer);
    return rc;
}

int sb_classify(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride,
                float * scores_out, int64_t * labels_out) {
    int rc;
    if (!m) return SB_EINVAL;
    if ((rc = check_images(m, rgb, n, h, w, stride)) != SB_OK) return rc;
    if (!scores_out || !labels_out) return fail(m, SB_EINVAL, "scores_out and labels_out must not be NULL");
    const struct sb_output outs[2] = {
        {"scores", scores_out, (size_t) m->num_classes, sizeof(float), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
        {"label", labels_out, 1, sizeof(int64_t), ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64},
    };
    return run(m, rgb, n, h, w, stride, outs, 2);
}

int sb_embed(struct sb_model * m, const uint8_t * rgb, int n, int h, int w, int stride, float * emb_out) {
    int rc;
    if (!m) return SB_EINVAL;
    if ((rc = check_images(m, rgb, n, h, w, stride)) != SB_OK) return rc;
    if (!emb_out) return fail(m, SB_EINVAL, "emb_out must not be NULL");
    const struct sb_output out = {"embedding", emb_out, (size_t) m->embedding_dim, sizeof(float),
                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
    return run(m, rgb, n, h, w, stride, &out, 1);
}

int sb_num_classes(const struct sb_model * m) { return m ? m->num_classes : -1; }

int sb_embedding_dim(const struct sb_model * m) { return m ? m->embedding_dim : -1; }

const char * sb_class_name(const struct sb_model * m, int i) {
    return m && i >= 0 && i < m->num_classes ? m->names[i] : NULL;
}

const char * sb_last_error(const struct sb_model * m) { return m ? m->err : "model is NULL"; }
