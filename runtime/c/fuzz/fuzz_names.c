/* fuzz_names.c - libFuzzer target for a model's class names (the semobridge.class_names metadata, '\n'-joined), as
 * classes_fitted checks them at sb_open with the class-file rule. A set it accepts has one name per line, none blank
 * and none holding a control byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classes.h"
#include "semobridge.h"
#include "check.h"


int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const int owner = 0;
    char * joined = malloc(size + 1); /* as ONNX Runtime hands the metadata over: a C string */
    struct sb_classes * c = NULL;
    char err[512] = "";
    if (!joined) return 0;
    memcpy(joined, data, size);
    joined[size] = '\0';
    const int rc = classes_fitted(&owner, joined, &c, err, sizeof err);
    CHECK(rc == SB_OK || rc == SB_EMODEL || rc == SB_ENOMEM);
    CHECK((rc == SB_OK) == (err[0] == '\0') && (rc == SB_OK) == (c != NULL));
    if (c) {
        size_t lines = 1;
        for (const char * p = joined; *p; p++) lines += *p == '\n';
        CHECK(c->owner == &owner && c->values == NULL && (size_t) c->count == lines);
        for (int i = 0; i < c->count; i++) {
            CHECK(c->names[i][0] != '\0');
            for (const unsigned char * p = (const unsigned char *) c->names[i]; *p; p++) CHECK(*p >= 0x20 && *p != 0x7F);
        }
        classes_release(c);
    }
    free(joined);
    return 0;
}
