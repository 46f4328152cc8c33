/* fuzz_frames.c - libFuzzer target for frames.c: frames with any layout, sides, strides and plane sizes, as an app
 * may pass them. Each plane is allocated at exactly its declared size (filled from the input), so a frame that
 * sb_frame_to_rgb accepts must be converted without reading outside its planes or writing outside rgb_out.
 *
 * Input: 24 bytes of fields (little-endian: layout, flags, width and height as int16, two strides as int16 times a
 * factor byte, two sizes as uint32), then the pixels, repeated to fill the planes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frames.h"
#include "semobridge.h"
#include "check.h"


#define MAX_PLANE (1u << 18) /* bytes per plane the target allocates */
#define MAX_RGB (1u << 20)   /* bytes of output */

static int16_t i16(const uint8_t * p) { return (int16_t) (uint16_t) (p[0] | p[1] << 8); }
static uint32_t u32(const uint8_t * p) { return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24; }

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size < 24) return 0;
    struct sb_frame f = sb_default_frame();
    uint8_t * planes[2] = {NULL, NULL};
    f.layout = (enum sb_layout) (int) (int8_t) data[0];
    f.full_range = data[1] & 1;
    f.width = i16(data + 2);
    f.height = i16(data + 4);
    f.stride[0] = i16(data + 6) * (data[10] ? data[10] : 1);
    f.stride[1] = i16(data + 8) * (data[11] ? data[11] : 1);
    for (int k = 0; k < 2; k++) {
        f.size[k] = u32(data + 12 + 4 * k) % (MAX_PLANE + 1);
        if (data[1] & (2 << k)) continue; /* a NULL plane */
        if (!(planes[k] = malloc(f.size[k] ? f.size[k] : 1))) goto done;
        const size_t pixels = size - 24 < f.size[k] ? size - 24 : f.size[k]; /* the pixels, repeated */
        if (pixels) memcpy(planes[k], data + 24, pixels);
        else memset(planes[k], 0x80, f.size[k]);
        for (size_t done = pixels; pixels && done < f.size[k]; done *= 2) {
            memcpy(planes[k] + done, planes[k], done < f.size[k] - done ? done : f.size[k] - done);
        }
        f.data[k] = planes[k];
    }
    char err[512] = "";
    const size_t rgb_size = f.width > 0 && f.height > 0 ? (size_t) f.width * (size_t) f.height * 3 : 0;
    if (rgb_size > MAX_RGB) goto done;
    uint8_t * rgb = malloc(rgb_size ? rgb_size : 1);
    if (!rgb) goto done;
    const int rc = sb_frame_to_rgb(&f, rgb, rgb_size, err, sizeof err);
    CHECK(rc == SB_OK || (rc == SB_EINVAL && err[0] != '\0'));
    if (rc == SB_OK && rgb_size >= 3) { /* one smaller output buffer is refused */
        CHECK(sb_frame_to_rgb(&f, rgb, rgb_size - 1, err, sizeof err) == SB_EINVAL && err[0] != '\0');
    }
    free(rgb);
done:
    free(planes[0]);
    free(planes[1]);
    return 0;
}
