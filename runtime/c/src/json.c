/* json.c - a strict, bounded JSON reader. See json.h. */
#include "json.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

struct parser {
    struct json * j;
    const unsigned char * s;
    size_t len, pos;
    unsigned flags;
    char * why;
    size_t whylen;
    bool nomem;
};

static int syntax(struct parser * p, const char * what) {
    snprintf(p->why, p->whylen, "%s at byte %zu", what, p->pos);
    return -1;
}

static void skip_space(struct parser * p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r')) {
        p->pos++;
    }
}

static bool starts(const struct parser * p, const char * word) {
    const size_t n = strlen(word);
    return p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0;
}

/* A new token of `type` starting at the current position; SIZE_MAX when out of memory. */
static size_t push(struct parser * p, enum json_type type) {
    struct json * j = p->j;
    if (j->ntokens == j->capacity) {
        const size_t capacity = j->capacity ? 2 * j->capacity : 64;
        struct json_token * grown = capacity < SIZE_MAX / sizeof *grown ? realloc(j->tokens, capacity * sizeof *grown) : NULL;
        if (!grown) {
            p->nomem = true;
            return SIZE_MAX;
        }
        j->tokens = grown;
        j->capacity = capacity;
    }
    j->tokens[j->ntokens] = (struct json_token){type, p->pos, p->pos, 0, 0};
    return j->ntokens++;
}

static int hex4(struct parser * p, uint32_t * out) {
    uint32_t v = 0;
    if (p->len - p->pos < 4) return syntax(p, "short \\u escape");
    for (int i = 0; i < 4; i++, p->pos++) {
        const unsigned char c = p->s[p->pos];
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                          c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return syntax(p, "bad \\u escape");
        v = v * 16 + (uint32_t) digit;
    }
    *out = v;
    return 0;
}

static int string(struct parser * p, size_t token) {
    p->pos++; /* the opening quote */
    p->j->tokens[token].start = p->pos;
    while (p->pos < p->len) {
        const unsigned char c = p->s[p->pos];
        uint32_t cp, low;
        if (c == '"') {
            p->j->tokens[token].end = p->pos++;
            return 0;
        }
        if (c < 0x20) return syntax(p, "control character in a string");
        if (c >= 0x80) {
            const size_t n = utf8_next(p->s + p->pos, p->len - p->pos, &cp);
            if (n == 0) return syntax(p, "invalid UTF-8");
            p->pos += n;
            continue;
        }
        p->pos++;
        if (c != '\\') continue;
        if (p->pos == p->len) break;
        if (strchr("\"\\/bfnrt", p->s[p->pos]) && p->s[p->pos] != '\0') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos++] != 'u') return syntax(p, "bad escape");
        if (hex4(p, &cp) != 0) return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return syntax(p, "lone surrogate escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!starts(p, "\\u")) return syntax(p, "lone surrogate escape");
            p->pos += 2;
            if (hex4(p, &low) != 0) return -1;
            if (low < 0xDC00 || low > 0xDFFF) return syntax(p, "lone surrogate escape");
        }
    }
    return syntax(p, "unterminated string");
}

static size_t digits(struct parser * p) {
    const size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    return p->pos - start;
}

static int number(struct parser * p) {
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    if ((p->flags & JSON_ALLOW_NONFINITE) && starts(p, "Infinity")) {
        p->pos += 8;
        return 0;
    }
    if (p->pos < p->len && p->s[p->pos] == '0') p->pos++;
    else if (digits(p) == 0) return syntax(p, "bad number");
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (digits(p) == 0) return syntax(p, "bad number");
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (digits(p) == 0) return syntax(p, "bad number");
    }
    return 0;
}

static int value(struct parser * p, int depth);

/* The members of an object or the elements of an array, after its opening bracket. */
static int container(struct parser * p, size_t token, int depth) {
    const bool object = p->j->tokens[token].type == JSON_OBJECT;
    const char close = object ? '}' : ']';
    size_t count = 0;
    p->pos++;
    skip_space(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_space(p);
        if (object) {
            size_t key;
            if (p->pos == p->len || p->s[p->pos] != '"') return syntax(p, "expected a string key");
            if ((key = push(p, JSON_STRING)) == SIZE_MAX || string(p, key) != 0) return -1;
            p->j->tokens[key].next = p->j->ntokens;
            skip_space(p);
            if (p->pos == p->len || p->s[p->pos] != ':') return syntax(p, "expected ':'");
            p->pos++;
        }
        if (value(p, depth + 1) != 0) return -1;
        p->j->tokens[token].count = ++count;
        skip_space(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return 0;
        }
        return syntax(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int value(struct parser * p, int depth) {
    size_t token;
    int rc = 0;
    if (depth > JSON_MAX_DEPTH) return syntax(p, "nested too deep");
    skip_space(p);
    if (p->pos == p->len) return syntax(p, "unexpected end");
    const unsigned char c = p->s[p->pos];
    const bool nonfinite = (p->flags & JSON_ALLOW_NONFINITE) && (starts(p, "NaN") || starts(p, "Infinity"));
    const enum json_type type = c == '{' ? JSON_OBJECT : c == '[' ? JSON_ARRAY : c == '"' ? JSON_STRING :
                                c == 't' || c == 'f' ? JSON_BOOL : c == 'n' ? JSON_NULL : JSON_NUMBER;
    if (type == JSON_NUMBER && c != '-' && !(c >= '0' && c <= '9') && !nonfinite) return syntax(p, "unexpected character");
    if ((token = push(p, type)) == SIZE_MAX) return -1;
    if (type == JSON_OBJECT || type == JSON_ARRAY) rc = container(p, token, depth);
    else if (type == JSON_STRING) rc = string(p, token);
    else if (nonfinite) p->pos += starts(p, "NaN") ? 3 : 8;
    else if (type == JSON_NUMBER) rc = number(p);
    else {
        const char * word = c == 't' ? "true" : c == 'f' ? "false" : "null";
        if (!starts(p, word)) return syntax(p, "unexpected character");
        p->pos += strlen(word);
    }
    if (rc != 0) return rc;
    if (type != JSON_STRING) p->j->tokens[token].end = p->pos;
    p->j->tokens[token].next = p->j->ntokens;
    return 0;
}

int json_parse(struct json * j, const char * text, size_t len, unsigned flags, char * why, size_t whylen) {
    struct parser p = {j, (const unsigned char *) text, len, 0, flags, why, whylen, false};
    *j = (struct json){text, NULL, 0, 0};
    int rc = value(&p, 1);
    if (rc == 0) {
        skip_space(&p);
        if (p.pos != len) rc = syntax(&p, "unexpected data after the value");
    }
    if (rc != 0) {
        json_free(j);
        return p.nomem ? -2 : -1;
    }
    return 0;
}

void json_free(struct json * j) {
    free(j->tokens);
    j->tokens = NULL;
    j->ntokens = j->capacity = 0;
}

/* Decode the character at text[*pos] (inside a checked string) into out; returns its UTF-8 length. */
static size_t decode_char(const char * text, size_t * pos, char out[4]) {
    const unsigned char * s = (const unsigned char *) text;
    uint32_t cp;
    if (s[*pos] != '\\') {
        out[0] = text[(*pos)++];
        return 1;
    }
    const char e = text[*pos + 1];
    *pos += 2;
    if (e != 'u') {
        out[0] = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
        return 1;
    }
    cp = (uint32_t) strtoul((char[5]){text[*pos], text[*pos + 1], text[*pos + 2], text[*pos + 3], '\0'}, NULL, 16);
    *pos += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF) { /* checked: a low surrogate escape follows */
        const uint32_t low = (uint32_t) strtoul(
            (char[5]){text[*pos + 2], text[*pos + 3], text[*pos + 4], text[*pos + 5], '\0'}, NULL, 16);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        *pos += 6;
    }
    return utf8_put(cp, out);
}

static bool string_is(const struct json * j, size_t token, const char * key) {
    const struct json_token * t = &j->tokens[token];
    const size_t keylen = strlen(key);
    size_t pos = t->start, matched = 0;
    char ch[4];
    if (t->type != JSON_STRING) return false;
    while (pos < t->end) {
        const size_t n = decode_char(j->text, &pos, ch);
        if (matched + n > keylen || memcmp(key + matched, ch, n) != 0) return false;
        matched += n;
    }
    return matched == keylen;
}

int json_get(const struct json * j, size_t object, const char * key, size_t * value) {
    int found = 0;
    if (j->tokens[object].type != JSON_OBJECT) return 0;
    for (size_t i = 0, k = object + 1; i < j->tokens[object].count; i++, k = j->tokens[k + 1].next) {
        if (string_is(j, k, key)) {
            if (found) return -1;
            found = 1;
            *value = k + 1;
        }
    }
    return found;
}

size_t json_at(const struct json * j, size_t array, size_t i) {
    size_t k = array + 1;
    while (i-- > 0) k = j->tokens[k].next;
    return k;
}

char * json_string(const struct json * j, size_t token, size_t * len) {
    const struct json_token * t = &j->tokens[token];
    char * out = malloc(t->end - t->start + 1); /* decoding never lengthens a string */
    size_t pos = t->start, n = 0;
    if (!out) return NULL;
    while (pos < t->end) n += decode_char(j->text, &pos, out + n);
    out[n] = '\0';
    if (len) *len = n;
    return out;
}

bool json_uint(const struct json * j, size_t token, uint64_t * out) {
    const struct json_token * t = &j->tokens[token];
    uint64_t v = 0;
    if (t->type != JSON_NUMBER || t->start == t->end) return false;
    for (size_t i = t->start; i < t->end; i++) {
        const unsigned d = (unsigned) (j->text[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool json_double(const struct json * j, size_t token, double * out) {
    const struct json_token * t = &j->tokens[token];
    const size_t n = t->end - t->start;
    char * copy, * end = NULL;
    if (t->type != JSON_NUMBER || !(copy = malloc(n + 1))) return false;
    memcpy(copy, j->text + t->start, n);
    copy[n] = '\0';
    const char * point = localeconv()->decimal_point; /* strtod follows LC_NUMERIC: use its decimal point */
    char * dot = strchr(copy, '.');
    if (dot && point && point[0] && !point[1]) *dot = point[0];
    *out = strtod(copy, &end);
    const bool ok = end == copy + n;
    free(copy);
    return ok;
}
