/* fuzz_classes.c - libFuzzer target for classes.c: any bytes as a class file, read for the toy model of the tests
 * (tests/runtime/contract_model.py: backbone "toy", weights "0"*16, bridge "b"*16, 8-wide).
 *
 * The bytes go into a memory file (memfd) read through /proc/self/fd, so classes_read runs as on a real file, with
 * no disk. A set it accepts must be whole: 1..SB_MAX_CLASSES names, each NUL-terminated, the values finite.
 */
#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "classes.h"
#include "semobridge.h"
#include "check.h"


static const struct class_identity TOY = {"toy", "0000000000000000", 16, "bbbbbbbbbbbbbbbb", 16, 8};

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static int fd = -1;
    static char path[64];
    static const int owner = 0;
    if (fd < 0) {
        CHECK((fd = memfd_create("fuzz.classes", 0)) >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t) size);

    struct sb_classes * c = NULL;
    char err[512] = "";
    const int rc = classes_read(&owner, path, &TOY, &c, err, sizeof err);
    CHECK(rc == SB_OK || rc == SB_EMODEL || rc == SB_ENOMEM);
    CHECK(strlen(err) < sizeof err && (rc == SB_OK) == (err[0] == '\0'));
    if (rc != SB_OK) {
        CHECK(c == NULL);
        return 0;
    }
    CHECK(c && c->owner == &owner && c->count >= 1 && c->count <= SB_MAX_CLASSES && c->dim == TOY.embedding_dim);
    for (int i = 0; i < c->count; i++) CHECK(c->names[i] && strlen(c->names[i]) <= 4 * 256);
    for (size_t i = 0; i < (3 * (size_t) c->dim + 1) * (size_t) c->count; i++) CHECK(isfinite(c->values[i]));
    classes_release(c);
    return 0;
}
