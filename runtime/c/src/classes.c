/* classes.c - class sets and class files (docs/classes.md). See classes.h. */
#define _POSIX_C_SOURCE 200809L /* open, pread, fstat */
#include "classes.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "casefold.h"
#include "json.h"
#include "semobridge.h"
#include "utf8.h"

#define MAX_HEADER 100000000u  /* bytes of JSON header, as the safetensors library allows */
#define MAX_NAME_LENGTH 256    /* code points: semobridge_runtime.names (tests/class_names.json holds C to it) */

const char * const sb_head_inputs[SB_HEAD_INPUTS] = SB_HEAD_INPUT_NAMES;
const char * const sb_open_set_scores[SB_OPEN_SET_SCORES] = SB_OPEN_SET_SCORE_NAMES;

static int say(char * err, size_t errlen, int code, const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* The index of the range among n (ascending, disjoint, `first` and `last` members) holding cp, or -1. */
#define FIND_RANGE(table, n, cp, found)                                     \
    do {                                                                    \
        size_t lo_ = 0, hi_ = (n);                                          \
        while (lo_ < hi_) {                                                 \
            const size_t mid_ = (lo_ + hi_) / 2;                            \
            if ((table)[mid_].last < (cp)) lo_ = mid_ + 1;                  \
            else hi_ = mid_;                                                \
        }                                                                   \
        (found) = lo_ < (n) && (table)[lo_].first <= (cp) ? (long) lo_ : -1; \
    } while (0)

/* What makes cp unusable in a class name (the rule's forbidden_ranges: Cc, Cf but ZWNJ/ZWJ, Zl, Zp), or NULL. */
static const char * forbidden(uint32_t cp) {
    long i;
    FIND_RANGE(forbidden_ranges, sizeof forbidden_ranges / sizeof forbidden_ranges[0], cp, i);
    return i < 0 ? NULL : forbidden_kinds[forbidden_ranges[i].kind];
}

/* s[0, len) for a message: quoted, cut after about 40 bytes, with quotes, backslashes, what a class name may not hold
 * and bytes that are not UTF-8 escaped (so the message stays one line of text). */
static const char * quoted(char out[80], const char * s, size_t len) {
    const unsigned char * u = (const unsigned char *) s;
    size_t o = 0, i = 0, step;
    uint32_t cp = 0;
    out[o++] = '"';
    for (; i < len && o < 44; i += step) {
        if (!(step = utf8_next(u + i, len - i, &cp))) {
            o += (size_t) snprintf(out + o, 5, "\\x%02X", u[i]);
            step = 1;
        } else if (forbidden(cp)) {
            o += (size_t) snprintf(out + o, 7, "\\u%04X", (unsigned) cp);
        } else {
            if (cp == '"' || cp == '\\') out[o++] = '\\';
            memcpy(out + o, s + i, step);
            o += step;
        }
    }
    out[o++] = '"';
    if (i < len) memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------ class sets */

static struct sb_classes * classes_new(const void * owner, const char * names, size_t len, int count) {
    struct sb_classes * c = calloc(1, sizeof *c);
    if (!c) return NULL;
    atomic_init(&c->refs, 1);
    c->owner = owner;
    c->temperature = c->threshold = NAN;
    c->score = -1;
    c->count = count;
    c->names_buf = malloc(len + 1);
    c->names = malloc(sizeof(char *) * (size_t) count);
    if (!c->names_buf || !c->names) {
        classes_release(c);
        return NULL;
    }
    memcpy(c->names_buf, names, len);
    c->names_buf[len] = '\0';
    c->names[0] = c->names_buf;
    for (size_t i = 0, k = 1; i < len; i++) {
        if (c->names_buf[i] == '\n') {
            c->names_buf[i] = '\0';
            c->names[k++] = c->names_buf + i + 1;
        }
    }
    return c;
}

static int count_names(const char * names, size_t len) {
    size_t count = 1;
    for (size_t i = 0; i < len; i++) count += names[i] == '\n';
    return count > (size_t) SB_MAX_CLASSES ? -1 : (int) count;
}

void classes_retain(struct sb_classes * c) { atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed); }

void classes_release(struct sb_classes * c) {
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    free(c->values);
    free(c->names);
    free(c->names_buf);
    free(c);
}

/* ------------------------------------------------------------------ class names */

/* White space as Python's str.strip() removes it (the rule's space_ranges). */
static bool is_space(uint32_t cp) {
    long i;
    FIND_RANGE(space_ranges, sizeof space_ranges / sizeof space_ranges[0], cp, i);
    return i >= 0;
}

/* The rule's case folding of one code point (Python's str.casefold, Unicode SB_CASEFOLD_UNICODE): 1 to 3 code points
 * into out. */
static size_t fold(uint32_t cp, uint32_t out[3]) {
    size_t lo = 0, hi = sizeof casefold_multi / sizeof casefold_multi[0];
    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    while (lo < hi) { /* the code points with several */
        const size_t mid = (lo + hi) / 2;
        if (casefold_multi[mid].cp < cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo < sizeof casefold_multi / sizeof casefold_multi[0] && casefold_multi[lo].cp == cp) {
        memcpy(out, casefold_multi[lo].to, sizeof casefold_multi[lo].to);
        return out[2] ? 3 : 2;
    }
    long r;
    FIND_RANGE(casefold_runs, sizeof casefold_runs / sizeof casefold_runs[0], cp, r);
    const bool folds = r >= 0 && (cp - casefold_runs[r].first) % casefold_runs[r].step == 0;
    out[0] = folds ? (uint32_t) ((int32_t) cp + casefold_runs[r].delta) : cp;
    return 1;
}

/* The comparison key of a (valid UTF-8) name: stripped of white space at both ends and case-folded, as Python's
 * name.strip().casefold() with the rule's tables, in UTF-8 into out (when not NULL). Returns its length. */
static size_t name_key(const char * name, size_t len, char * out) {
    const unsigned char * s = (const unsigned char *) name;
    size_t begin = 0, end = len, n = 0, step;
    uint32_t cp = 0, folded[3];
    while (begin < end && (step = utf8_next(s + begin, end - begin, &cp)) && is_space(cp)) begin += step;
    while (end > begin) { /* back to the start of the last character */
        size_t start = end - 1;
        while (start > begin && (s[start] & 0xC0) == 0x80) start--;
        utf8_next(s + start, end - start, &cp);
        if (!is_space(cp)) break;
        end = start;
    }
    for (size_t i = begin; i < end; i += step) {
        step = utf8_next(s + i, end - i, &cp);
        for (size_t k = 0, m = fold(cp, folded); k < m; k++) {
            char bytes[4];
            const size_t b = utf8_put(folded[k], bytes);
            if (out) memcpy(out + n, bytes, b);
            n += b;
        }
    }
    return n;
}

struct name_key {
    const char * key;
    size_t len;
    int index;
};

static int compare_keys(const void * a, const void * b) {
    const struct name_key * x = a, * y = b;
    const int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    if (c != 0) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* The byte length of name i of a set made from `bytes` bytes of names (a name may hold a NUL byte, which is refused). */
static size_t name_length(const struct sb_classes * c, int i, size_t bytes) {
    return (size_t) ((i + 1 < c->count ? c->names[i + 1] - 1 : c->names_buf + bytes) - c->names[i]);
}

/* Check the names of a set made from `bytes` bytes of names as semobridge_runtime.names.check_names does; a message in
 * why on failure. */
static int check_names(const struct sb_classes * c, size_t bytes, char * why, size_t whylen) {
    char q[80], q2[80];
    size_t total = 0;
    for (int i = 0; i < c->count; i++) {
        const unsigned char * s = (const unsigned char *) c->names[i];
        const size_t len = name_length(c, i, bytes);
        size_t chars = 0, step;
        uint32_t cp = 0;
        bool blank = true;
        for (size_t k = 0; k < len; k += step, chars++) {
            step = utf8_next(s + k, len - k, &cp); /* the whole block is valid UTF-8 */
            blank = blank && is_space(cp);
        }
        if (blank) return say(why, whylen, SB_EMODEL, "class name %d, %s, is empty", i, quoted(q, c->names[i], len));
        if (chars > MAX_NAME_LENGTH) {
            return say(why, whylen, SB_EMODEL, "class name %d, %s, has %zu characters, over %d", i, quoted(q, c->names[i], len),
                       chars, MAX_NAME_LENGTH);
        }
        for (size_t k = 0; k < len; k += step) {
            step = utf8_next(s + k, len - k, &cp);
            if (forbidden(cp)) {
                return say(why, whylen, SB_EMODEL, "class name %d, %s, contains %s (U+%04X); class names are one line of "
                           "visible text", i, quoted(q, c->names[i], len), forbidden(cp), (unsigned) cp);
            }
        }
        total += name_key(c->names[i], len, NULL);
    }
    struct name_key * keys = malloc(sizeof *keys * (size_t) c->count);
    char * buf = malloc(total + 1);
    int rc = SB_OK;
    if (!keys || !buf) {
        rc = say(why, whylen, SB_ENOMEM, "out of memory comparing class names");
        goto done;
    }
    size_t offset = 0;
    for (int i = 0; i < c->count; i++) {
        keys[i] = (struct name_key){buf + offset, name_key(c->names[i], name_length(c, i, bytes), buf + offset), i};
        offset += keys[i].len;
    }
    qsort(keys, (size_t) c->count, sizeof *keys, compare_keys);
    int first = -1, later = -1; /* the clash Python reports: the earliest name equal to one before it */
    for (int i = 1; i < c->count; i++) {
        if (keys[i].len == keys[i - 1].len && memcmp(keys[i].key, keys[i - 1].key, keys[i].len) == 0 &&
            (later < 0 || keys[i].index < later)) {
            int k = i - 1;
            while (k > 0 && keys[k - 1].len == keys[k].len && memcmp(keys[k - 1].key, keys[k].key, keys[k].len) == 0) k--;
            first = keys[k].index, later = keys[i].index;
        }
    }
    if (later >= 0) {
        rc = say(why, whylen, SB_EMODEL, "class name %d, %s, repeats class %d, %s, ignoring case and surrounding white "
                 "space", later, quoted(q, c->names[later], name_length(c, later, bytes)), first,
                 quoted(q2, c->names[first], name_length(c, first, bytes)));
    }
done:
    free(keys);
    free(buf);
    return rc;
}

/* A new set of `count` classes (count_names of them) from names[0, len), checked as semobridge_runtime.names.check_names
 * checks them (and as UTF-8): SB_OK, or SB_EMODEL / SB_ENOMEM with what is wrong in why. */
static int names_set(const void * owner, const char * names, size_t len, int count, struct sb_classes ** out, char * why,
                     size_t whylen) {
    struct sb_classes * c;
    int rc;
    for (size_t k = 0, step; k < len; k += step) {
        uint32_t cp = 0;
        if (!(step = utf8_next((const unsigned char *) names + k, len - k, &cp))) {
            return say(why, whylen, SB_EMODEL, "not UTF-8 at byte %zu", k);
        }
    }
    if (!(c = classes_new(owner, names, len, count))) return say(why, whylen, SB_ENOMEM, "out of memory for %d class names", count);
    if ((rc = check_names(c, len, why, whylen)) != SB_OK) {
        classes_release(c);
        return rc;
    }
    *out = c;
    return SB_OK;
}

int classes_fitted(const void * owner, const char * joined, struct sb_classes ** out, char * err, size_t errlen) {
    const size_t len = strlen(joined);
    const int count = count_names(joined, len);
    char why[256];
    int rc;
    if (len == 0) return say(err, errlen, SB_EMODEL, "the model's semobridge.class_names metadata is empty; re-export it");
    if (count < 0) return say(err, errlen, SB_EMODEL, "the model names over %d classes; re-export it", SB_MAX_CLASSES);
    if ((rc = names_set(owner, joined, len, count, out, why, sizeof why)) != SB_OK) {
        return say(err, errlen, rc, rc == SB_ENOMEM ? "%s" : "the model's class names are unusable (%s); re-export it",
                   why);
    }
    return SB_OK;
}

/* ------------------------------------------------------------------ class files */

struct tensor {
    const char * name;
    const char * dtype;  /* the one expected */
    size_t item;         /* its size in bytes */
    size_t rank;
    uint64_t shape[2];
    uint64_t begin, end; /* data_offsets */
};

/* The spec of tensor t->name (an object: dtype, shape, data_offsets) from the header. */
static int read_spec(const struct json * j, size_t token, struct tensor * t, uint64_t data_size, const char * source,
                     char * err, size_t errlen) {
    size_t dtype, shape, offsets;
    uint64_t count = 1, begin, end;
    char * type = NULL;
    if (j->tokens[token].type != JSON_OBJECT || json_get(j, token, "dtype", &dtype) != 1 ||
        json_get(j, token, "shape", &shape) != 1 || json_get(j, token, "data_offsets", &offsets) != 1 ||
        j->tokens[dtype].type != JSON_STRING || j->tokens[shape].type != JSON_ARRAY ||
        j->tokens[offsets].type != JSON_ARRAY || j->tokens[offsets].count != 2 ||
        !json_uint(j, json_at(j, offsets, 0), &begin) || !json_uint(j, json_at(j, offsets, 1), &end)) {
        return say(err, errlen, SB_EMODEL, "%s is corrupt (tensor '%s' is not {\"dtype\": string, \"shape\": [integers], "
                   "\"data_offsets\": [begin, end]}); write it again", source, t->name);
    }
    if (!(type = json_string(j, dtype, NULL))) return say(err, errlen, SB_ENOMEM, "out of memory reading %s", source);
    if (strcmp(type, t->dtype) != 0) {
        char q[80];
        say(err, errlen, SB_EMODEL, "%s has tensor '%s' of dtype %s, expected %s; write it again", source, t->name,
            quoted(q, type, strlen(type)), t->dtype);
        free(type);
        return SB_EMODEL;
    }
    free(type);
    t->rank = j->tokens[shape].count;
    for (size_t i = 0; i < t->rank; i++) {
        uint64_t d;
        if (!json_uint(j, json_at(j, shape, i), &d)) {
            return say(err, errlen, SB_EMODEL, "%s is corrupt (tensor '%s' has a shape that is not integers); write it "
                       "again", source, t->name);
        }
        if (i < 2) t->shape[i] = d;
        count = d != 0 && count > UINT64_MAX / d ? UINT64_MAX : count * d;
    }
    const uint64_t bytes = count <= UINT64_MAX / t->item ? count * t->item : UINT64_MAX;
    if (!(begin <= end && end <= data_size && end - begin == bytes)) {
        return say(err, errlen, SB_EMODEL, "%s is truncated or corrupt (tensor '%s' has data_offsets [%llu, %llu], but its "
                   "shape needs %llu bytes, within the %llu bytes of data); write it again", source, t->name,
                   (unsigned long long) begin, (unsigned long long) end, (unsigned long long) bytes,
                   (unsigned long long) data_size);
    }
    t->begin = begin;
    t->end = end;
    return SB_OK;
}

/* A metadata string, decoded (malloc'd; its length in *len), or NULL if absent; *fault set to SB_ENOMEM when out of
 * memory, SB_EMODEL when the key appears twice (JSON leaves that open; Python's reader refuses it too). */
static char * meta_string(const struct json * j, size_t meta, const char * key, size_t * len, int * fault) {
    size_t token;
    char * s;
    if (meta == 0) return NULL;
    const int found = json_get(j, meta, key, &token);
    if (found < 0 && *fault == SB_OK) *fault = SB_EMODEL;
    if (found != 1) return NULL;
    if (!(s = json_string(j, token, len))) *fault = SB_ENOMEM;
    return s;
}

/* The error of a meta_string fault. */
static int meta_fault(int fault, const char * source, char * err, size_t errlen) {
    if (fault == SB_ENOMEM) return say(err, errlen, SB_ENOMEM, "out of memory reading %s", source);
    return say(err, errlen, SB_EMODEL, "%s is not a usable class file (a __metadata__ key appears twice); write it "
               "again with Classifier.save_classes or semobridge-classes", source);
}

static bool read_at(int fd, void * dst, uint64_t bytes, uint64_t offset) {
    while (bytes > 0) {
        const ssize_t got = pread(fd, dst, bytes < (1u << 30) ? (size_t) bytes : (1u << 30), (off_t) offset);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) continue;
            return false;
        }
        dst = (char *) dst + got, bytes -= (uint64_t) got, offset += (uint64_t) got;
    }
    return true;
}

static bool host_is_big_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *) &one == 0;
}

/* A class file's header: parsed JSON with its metadata checked (steps 2 and 3 of docs/classes.md). */
static int check_header(const struct json * j, const struct class_identity * id, const char * source, char * err,
                        size_t errlen) {
    size_t meta = 0;
    char q[80], q2[80], q3[80], q4[80];
    int fault = SB_OK;
    int rc = SB_OK;
    if (j->tokens[0].type != JSON_OBJECT) {
        return say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (its header is not a JSON object)",
                   source);
    }
    const int found = json_get(j, 0, "__metadata__", &meta);
    if (found < 0 || (found == 1 && j->tokens[meta].type != JSON_OBJECT)) {
        return say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (%s)", source,
                   found < 0 ? "__metadata__ appears twice" : "__metadata__ is not an object");
    }
    for (size_t i = 0, k = meta + 1; found == 1 && i < j->tokens[meta].count; i++, k = j->tokens[k + 1].next) {
        if (j->tokens[k + 1].type != JSON_STRING) {
            return say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (a __metadata__ value is not a "
                       "string)", source);
        }
    }
    size_t format_len = 0, weights_len = 0, bridge_len = 0, backbone_len = 0;
    char * format = meta_string(j, meta, "format", &format_len, &fault);
    char * weights = meta_string(j, meta, "weights_hash", &weights_len, &fault);
    char * bridge = meta_string(j, meta, "bridge_hash", &bridge_len, &fault);
    char * backbone = meta_string(j, meta, "backbone", &backbone_len, &fault);
    if (fault != SB_OK) {
        rc = meta_fault(fault, source, err, errlen);
    } else if (!format || strcmp(format, SB_CLASS_FILE_FORMAT) != 0 || format_len != strlen(SB_CLASS_FILE_FORMAT)) {
        rc = say(err, errlen, SB_EMODEL, "%s is not a semobridge class file (format %s, expected '%s'); write one with "
                 "Classifier.save_classes or semobridge-classes", source, format ? quoted(q, format, format_len) : "none",
                 SB_CLASS_FILE_FORMAT);
    } else if (!weights || weights_len != id->weights_hash_len || memcmp(weights, id->weights_hash, weights_len) != 0) {
        rc = say(err, errlen, SB_EMODEL, "%s was made for the backbone %s with weights %s, but this model's backbone is "
                 "%s with weights %s; enrol the classes again with this model", source,
                 backbone ? quoted(q, backbone, backbone_len) : "(unnamed)", weights ? quoted(q2, weights, weights_len) : "(none)",
                 quoted(q4, id->backbone, strlen(id->backbone)), quoted(q3, id->weights_hash, id->weights_hash_len));
    } else if (!bridge || bridge_len != id->bridge_hash_len || memcmp(bridge, id->bridge_hash, bridge_len) != 0) {
        rc = say(err, errlen, SB_EMODEL, "%s was bridged with another W+ (bridge %s, this model's: %s; a SeMoBridge-T model "
                 "and a training-free one differ); enrol the classes again with this model", source,
                 bridge ? quoted(q, bridge, bridge_len) : "(none)", quoted(q2, id->bridge_hash, id->bridge_hash_len));
    }
    free(format);
    free(weights);
    free(bridge);
    free(backbone);
    return rc;
}

int classes_score_index(const char * name, size_t len) {
    for (int i = 0; name && i < SB_OPEN_SET_SCORES; i++) {
        if (len == strlen(sb_open_set_scores[i]) && memcmp(name, sb_open_set_scores[i], len) == 0) return i;
    }
    return -1;
}

/* The open set's `temperature` and `threshold` (step 7): both absent (NAN: the model's apply) or both numbers in
 * semobridge_runtime.openset's ranges (tests/runtime/test_c_classes.py holds C to Python on their edges); and its
 * `score`, one of SB_OPEN_SET_SCORE_NAMES wherever it is written (absent: SB_OPEN_SET_SCORE_DEFAULT), into *score as its
 * index (-1 with no temperature and threshold: the model's score applies). */
static int read_open_set(const struct json * j, const char * source, double * temperature, double * threshold,
                         int * score, char * err, size_t errlen) {
    static const char * const keys[2] = SB_CLASS_FILE_OPEN_SET;
    static const double low[2] = {SB_TEMPERATURE_MIN, 0.0}, high[2] = {SB_TEMPERATURE_MAX, 1.0};
    double * out[2] = {temperature, threshold};
    size_t meta = 0, score_len = 0;
    int fault = SB_OK;
    int given = 0;
    char * text[2];
    size_t len[2] = {0, 0};
    *temperature = *threshold = NAN;
    *score = -1;
    if (json_get(j, 0, "__metadata__", &meta) != 1) meta = 0;
    for (int i = 0; i < 2; i++) {
        text[i] = meta_string(j, meta, keys[i], &len[i], &fault);
        given += text[i] != NULL;
    }
    char * named = meta_string(j, meta, SB_CLASS_FILE_SCORE, &score_len, &fault);
    const int index = named ? classes_score_index(named, score_len) : SB_OPEN_SET_SCORE_DEFAULT;
    int rc = SB_OK;
    if (fault != SB_OK) {
        rc = meta_fault(fault, source, err, errlen);
    } else if (given == 1) {
        rc = say(err, errlen, SB_EMODEL, "%s has an unusable open-set calibration (it has a %s but no %s); write it again "
                 "with Classifier.save_classes or semobridge-classes", source, keys[text[0] == NULL], keys[text[0] != NULL]);
    } else if (index < 0) {
        char q[80];
        rc = say(err, errlen, SB_EMODEL, "%s has an unusable open-set calibration (%s %s is not one of %s, %s); write it "
                 "again with Classifier.save_classes or semobridge-classes, or update libsemobridge", source,
                 SB_CLASS_FILE_SCORE, quoted(q, named, score_len), sb_open_set_scores[0],
                 sb_open_set_scores[SB_OPEN_SET_SCORES - 1]);
    }
    for (int i = 0; given == 2 && rc == SB_OK && i < 2; i++) {
        char * end = NULL;
        const double v = strtod(text[i], &end); /* decimal only: no space, hex, inf or nan (as Python's reader) */
        if (strspn(text[i], "0123456789.eE+-") != len[i] || end == text[i] || end != text[i] + len[i] || !isfinite(v) ||
            !(v >= low[i] && v <= high[i])) {
            char q[80];
            rc = say(err, errlen, SB_EMODEL, "%s has an unusable open-set calibration (%s %s is not a number in [%g, %g]); "
                     "write it again with Classifier.save_classes or semobridge-classes", source, keys[i],
                     quoted(q, text[i], len[i]), low[i], high[i]);
        }
        *out[i] = v;
    }
    if (rc != SB_OK) *temperature = *threshold = NAN;
    else if (given == 2) *score = index;
    free(text[0]);
    free(text[1]);
    free(named);
    return rc;
}

/* The five tensors' specs (step 4) and their shapes (step 5). */
static int check_tensors(const struct json * j, struct tensor t[5], uint64_t data_size, const struct class_identity * id,
                         const char * source, char * err, size_t errlen) {
    char missing[128] = "";
    for (int i = 0; i < 5; i++) {
        size_t token;
        const int found = json_get(j, 0, t[i].name, &token);
        if (found < 0) return say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (tensor '%s' appears "
                                  "twice)", source, t[i].name);
        if (found == 0) {
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", missing[0] ? ", " : "", t[i].name);
        }
    }
    if (missing[0]) return say(err, errlen, SB_EMODEL, "%s lacks the tensor(s) %s; write it again", source, missing);
    for (int i = 0; i < 5; i++) {
        size_t token;
        int rc;
        json_get(j, 0, t[i].name, &token);
        if ((rc = read_spec(j, token, &t[i], data_size, source, err, errlen)) != SB_OK) return rc;
    }
    const uint64_t C = t[0].shape[0], d = t[0].shape[1];
    bool fits = t[4].rank == 1 && t[3].rank == 1 && t[3].shape[0] == C;
    for (int i = 0; i < 3; i++) fits = fits && t[i].rank == 2 && t[i].shape[0] == C && t[i].shape[1] == d;
    if (!fits) {
        char shapes[5][48];
        for (int i = 0; i < 5; i++) {
            if (t[i].rank == 1) snprintf(shapes[i], sizeof shapes[i], "[%llu]", (unsigned long long) t[i].shape[0]);
            else if (t[i].rank == 2) snprintf(shapes[i], sizeof shapes[i], "[%llu, %llu]", (unsigned long long) t[i].shape[0],
                                              (unsigned long long) t[i].shape[1]);
            else snprintf(shapes[i], sizeof shapes[i], "of rank %zu", t[i].rank);
        }
        return say(err, errlen, SB_EMODEL, "%s has tensors of shapes %s, %s, %s, %s and %s, which do not make one class "
                   "set ([C, d] three times, [C], [bytes]); write it again", source, shapes[0], shapes[1], shapes[2],
                   shapes[3], shapes[4]);
    }
    if (C < 1 || C > SB_MAX_CLASSES) {
        return say(err, errlen, SB_EMODEL, "%s has %llu classes; a class set has 1 to %d; write it again", source,
                   (unsigned long long) C, SB_MAX_CLASSES);
    }
    if (d != (uint64_t) id->embedding_dim) {
        return say(err, errlen, SB_EMODEL, "%s has %llu-wide prototypes; this model's are %d: enrol the classes again "
                   "with this model", source, (unsigned long long) d, id->embedding_dim);
    }
    return SB_OK;
}

/* Read the tensors into a new set, check its names (step 5) and values (step 6). */
static int read_set(const void * owner, int fd, uint64_t data_start, const struct tensor t[5], const char * source,
                    struct sb_classes ** out, char * err, size_t errlen) {
    const int C = (int) t[0].shape[0], d = (int) t[0].shape[1];
    const uint64_t names_len = t[4].end - t[4].begin;
    const size_t values = (3 * (size_t) d + 1) * (size_t) C;
    char why[256];
    int rc = SB_OK;
    char * names = names_len < SIZE_MAX ? malloc((size_t) names_len + 1) : NULL;
    struct sb_classes * c = NULL;
    float * v = values <= SIZE_MAX / sizeof(float) ? malloc(values * sizeof(float)) : NULL;
    if (!names || !v) {
        rc = say(err, errlen, SB_ENOMEM, "out of memory for the %d classes of %s", C, source);
        goto done;
    }
    errno = 0;
    for (int i = 0; i < 5; i++) {
        void * dst = i < 4 ? (void *) (v + (size_t) i * (size_t) C * (size_t) d) : names;
        if (!read_at(fd, dst, t[i].end - t[i].begin, data_start + t[i].begin)) {
            rc = say(err, errlen, SB_EMODEL, "%s is truncated (reading tensor '%s' failed: %s); write it again", source,
                     t[i].name, errno ? strerror(errno) : "end of file");
            goto done;
        }
    }
    if (count_names(names, (size_t) names_len) != C) {
        rc = say(err, errlen, SB_EMODEL, "%s has %d class names for %d classes; write it again", source,
                 count_names(names, (size_t) names_len), C);
        goto done;
    }
    if ((rc = names_set(owner, names, (size_t) names_len, C, &c, why, sizeof why)) != SB_OK) {
        rc = say(err, errlen, rc, rc == SB_ENOMEM ? "%s: %s" : "%s has unusable class names (%s); write it again", source, why);
        goto done;
    }
    if (host_is_big_endian()) { /* the file's floats are little-endian */
        for (size_t i = 0; i < values; i++) {
            uint32_t x;
            memcpy(&x, v + i, 4);
            x = (x >> 24) | ((x >> 8) & 0xFF00u) | ((x << 8) & 0xFF0000u) | (x << 24);
            memcpy(v + i, &x, 4);
        }
    }
    for (size_t i = 0; i < values; i++) {
        if (!isfinite(v[i])) {
            const int tensor = i < 3 * (size_t) C * (size_t) d ? (int) (i / ((size_t) C * (size_t) d)) : 3;
            const size_t row = tensor < 3 ? (i % ((size_t) C * (size_t) d)) / (size_t) d : i - 3 * (size_t) C * (size_t) d;
            rc = say(err, errlen, SB_EMODEL, "%s holds NaN or infinite values (%s, class %zu); write it again", source,
                     t[tensor].name, row);
            goto done;
        }
    }
    c->dim = d;
    c->values = v;
    v = NULL;
    *out = c;
    c = NULL;
done:
    classes_release(c);
    free(v);
    free(names);
    return rc;
}

int classes_read(const void * owner, const char * path, const struct class_identity * id, struct sb_classes ** out,
                 char * err, size_t errlen) {
    char source[320];
    unsigned char length[8];
    struct stat st;
    struct json j = {0};
    char * header = NULL;
    int rc = SB_OK;
    uint64_t n = 0;
    struct tensor t[5] = {
        {sb_head_inputs[0], "F32", 4, 0, {0, 0}, 0, 0}, {sb_head_inputs[1], "F32", 4, 0, {0, 0}, 0, 0},
        {sb_head_inputs[2], "F32", 4, 0, {0, 0}, 0, 0}, {sb_head_inputs[3], "F32", 4, 0, {0, 0}, 0, 0},
        {SB_CLASS_FILE_NAMES, "U8", 1, 0, {0, 0}, 0, 0},
    };
    const int fd = open(path, O_RDONLY | O_NONBLOCK); /* not blocking on a FIFO: it is refused below */
    snprintf(source, sizeof source, "class file '%s'", path);
    if (fd < 0) return say(err, errlen, SB_EMODEL, "cannot read %s: %s", source, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = say(err, errlen, SB_EMODEL, "cannot read %s: %s", source, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = say(err, errlen, SB_EMODEL, S_ISDIR(st.st_mode) ? "%s is a directory, not a class file"
                                                             : "%s is not a regular file (a pipe or a device); pass a class file", source);
        goto done;
    }
    const uint64_t size = (uint64_t) st.st_size;
    if (size < 8 || !read_at(fd, length, 8, 0)) { /* 1. truncation */
        rc = say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (%llu bytes)", source, (unsigned long long) size);
        goto done;
    }
    for (int i = 7; i >= 0; i--) n = n << 8 | length[i];
    if (n > size - 8) {
        rc = say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (its header claims %llu bytes, the file "
                 "has %llu after the length)", source, (unsigned long long) n, (unsigned long long) (size - 8));
        goto done;
    }
    if (n > MAX_HEADER) {
        rc = say(err, errlen, SB_EMODEL, "%s is not a class file (a header of %llu bytes, over safetensors' limit of %u)",
                 source, (unsigned long long) n, MAX_HEADER);
        goto done;
    }
    if (!(header = malloc((size_t) n + 1))) {
        rc = say(err, errlen, SB_ENOMEM, "out of memory reading %s", source);
        goto done;
    }
    if (!read_at(fd, header, n, 8)) {
        rc = say(err, errlen, SB_EMODEL, "%s is truncated (reading its header failed); write it again", source);
        goto done;
    }
    char why[128];
    const int parsed = json_parse(&j, header, (size_t) n, 0, why, sizeof why); /* 2. format */
    if (parsed != 0) {
        rc = parsed == -2 ? say(err, errlen, SB_ENOMEM, "out of memory reading %s", source)
                          : say(err, errlen, SB_EMODEL, "%s is truncated or not a safetensors file (its header is not "
                                "JSON: %s)", source, why);
        goto done;
    }
    if ((rc = check_header(&j, id, source, err, errlen)) != SB_OK ||                      /* 2, 3. format, hashes */
        (rc = check_tensors(&j, t, size - 8 - n, id, source, err, errlen)) != SB_OK) {  /* 4, 5. offsets, shapes */
        goto done;
    }
    double temperature, threshold;
    int score;
    if ((rc = read_open_set(&j, source, &temperature, &threshold, &score, err, errlen)) != SB_OK) goto done; /* 7 */
    if ((rc = read_set(owner, fd, 8 + n, t, source, out, err, errlen)) == SB_OK) {             /* 5, 6. names, values */
        (*out)->temperature = temperature;
        (*out)->threshold = threshold;
        (*out)->score = score;
    }
done:
    json_free(&j);
    free(header);
    close(fd);
    return rc;
}
