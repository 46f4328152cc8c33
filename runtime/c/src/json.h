/* json.h - a strict, bounded JSON reader for the model's metadata and class-file headers.
 *
 * json_parse checks the whole text against RFC 8259 (UTF-8, escapes, surrogate pairs, no
 * trailing data; nesting at most JSON_MAX_DEPTH) and lays its values out as tokens in document
 * order: token 0 is the root, a container's members or elements follow it, and `next` skips a
 * value with everything inside it. Lookups never assume a key is unique: json_get reports
 * duplicates. Internal to the library (not installed).
 */
#ifndef SB_JSON_H
#define SB_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 64
#define JSON_ALLOW_NONFINITE 1u /* also take NaN, Infinity and -Infinity as numbers (Python's json writes them) */

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json_token {
    enum json_type type;
    size_t start, end; /* the value's bytes in the text; for strings, inside the quotes */
    size_t count;      /* members of an object, elements of an array */
    size_t next;       /* the token after this value and everything inside it */
};

struct json {
    const char * text;
    struct json_token * tokens;
    size_t ntokens, capacity;
};

/* Parse text[0, len). Returns 0, -1 with a reason in why (malformed), or -2 (out of memory).
 * On success free the tokens with json_free. */
int json_parse(struct json * j, const char * text, size_t len, unsigned flags, char * why, size_t whylen);
void json_free(struct json * j);

/* The value of member `key` of object token `object`: 1 found (*value set), 0 absent, -1 the key appears twice. */
int json_get(const struct json * j, size_t object, const char * key, size_t * value);

/* Element i of array token `array` (i < count). */
size_t json_at(const struct json * j, size_t array, size_t i);

/* A string token's value, escapes decoded, as a malloc'd NUL-terminated UTF-8 string (its length in *len
 * when len is not NULL; it may hold NUL bytes, from \u0000); NULL when out of memory. */
char * json_string(const struct json * j, size_t token, size_t * len);

/* A number token as a non-negative integer (no sign, fraction or exponent) up to UINT64_MAX. */
bool json_uint(const struct json * j, size_t token, uint64_t * out);

/* A number token as a double (NaN and infinities when parsed with JSON_ALLOW_NONFINITE). */
bool json_double(const struct json * j, size_t token, double * out);

#endif /* SB_JSON_H */
