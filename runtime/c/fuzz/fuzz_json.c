/* fuzz_json.c - libFuzzer target for json.c: any bytes, parsed strictly and with JSON_ALLOW_NONFINITE.
 *
 * On top of the sanitizers it checks the reader's promises: a text taken strictly is taken with non-finite numbers
 * too, into the same tokens; tokens lie inside the text and nest (a value's `next` skips exactly what it holds);
 * every accessor works on every token it accepts (json_get finds each key of an object, a duplicate as -1; a decoded
 * string is no longer than its bytes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "check.h"


/* Token t and everything in it: returns the token after it (what t.next must say). */
static size_t walk(const struct json * j, size_t t, size_t len) {
    const struct json_token * tok = &j->tokens[t];
    CHECK(tok->start <= tok->end && tok->end <= len);
    size_t k = t + 1;
    if (tok->type == JSON_OBJECT || tok->type == JSON_ARRAY) {
        for (size_t i = 0; i < tok->count; i++) {
            if (tok->type == JSON_OBJECT) {
                CHECK(k < j->ntokens && j->tokens[k].type == JSON_STRING && j->tokens[k].next == k + 1);
                k++;
            }
            CHECK(k < j->ntokens);
            if (tok->type == JSON_ARRAY) CHECK(json_at(j, t, i) == k);
            k = walk(j, k, len);
        }
    }
    CHECK(tok->next == k);
    return k;
}

/* Exercise every accessor on every token. */
static void use(const struct json * j) {
    for (size_t t = 0; t < j->ntokens; t++) {
        const struct json_token * tok = &j->tokens[t];
        uint64_t u;
        double d;
        if (tok->type == JSON_STRING) {
            size_t n = 0;
            char * s = json_string(j, t, &n);
            if (s) {
                CHECK(n <= tok->end - tok->start && s[n] == '\0');
                free(s);
            }
        } else if (tok->type == JSON_NUMBER) {
            (void) json_uint(j, t, &u);
            (void) json_double(j, t, &d);
        } else if (tok->type == JSON_OBJECT) {
            size_t k = t + 1;
            for (size_t i = 0; i < tok->count; i++, k = j->tokens[k + 1].next) {
                size_t n = 0, value = 0;
                char * key = json_string(j, k, &n);
                if (!key) continue;
                if (strlen(key) == n) { /* json_get takes a C string: keys without NUL */
                    const int found = json_get(j, t, key, &value);
                    CHECK(found == 1 || found == -1);
                    CHECK(found == -1 || value == k + 1);
                }
                free(key);
            }
            size_t value;
            (void) json_get(j, t, "", &value);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    struct json strict, lax;
    char why[128];
    const int a = json_parse(&strict, (const char *) data, size, 0, why, sizeof why);
    const int b = json_parse(&lax, (const char *) data, size, JSON_ALLOW_NONFINITE, why, sizeof why);
    CHECK(a == 0 || a == -1);
    CHECK(b == 0 || b == -1);
    if (a == 0) {
        CHECK(b == 0 && strict.ntokens == lax.ntokens);
        CHECK(memcmp(strict.tokens, lax.tokens, strict.ntokens * sizeof *strict.tokens) == 0);
    }
    if (b == 0) {
        CHECK(lax.ntokens > 0 && walk(&lax, 0, size) == lax.ntokens);
        use(&lax);
    }
    if (a == 0) json_free(&strict);
    if (b == 0) json_free(&lax);
    return 0;
}
