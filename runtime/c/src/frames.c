/* frames.c - camera frames to packed RGB, by the reference rule of runtime/semobridge_runtime/frames.py: BT.601 in
 * 16-bit fixed point, each NV12 U, V pair the chroma of a 2x2 block. tests/runtime/test_frames.py compares the two bit
 * for bit and checks that these coefficients are frames.py's BT601. */
#include "frames.h"

#include <stdio.h>
#include <string.h>

/* Bytes per pixel of plane 0, and names, by enum sb_layout. */
static const int bytes_per_pixel[] = {3, 3, 4, 4, 1};
static const char * const layout_names[] = {"RGB", "BGR", "RGBA", "BGRA", "NV12"};
#define N_LAYOUTS ((int) (sizeof bytes_per_pixel / sizeof bytes_per_pixel[0]))

/* BT.601 YCbCr -> RGB times 2^16, rounded: y_offset, cy, rv, gu, gv, bu; [0] limited range, [1] full range. */
static const int32_t bt601[2][6] = {
    {16, 76309, 104597, 25675, 53279, 132201},
    {0, 65536, 91881, 22553, 46802, 116130},
};

struct sb_frame sb_default_frame(void) {
    struct sb_frame f;
    memset(&f, 0, sizeof f);
    return f;
}

static int stride_of(const struct sb_frame * f, int plane) {
    const int row = f->width * bytes_per_pixel[f->layout]; /* NV12's UV row: width / 2 pairs = width bytes */
    return f->stride[plane] ? f->stride[plane] : row;
}

/* Check plane k: not NULL, stride >= row bytes, size[k] >= (rows - 1) * stride + row bytes. */
static int check_plane(const struct sb_frame * f, int k, int rows, char * err, size_t errlen) {
    const long long row = (long long) f->width * bytes_per_pixel[f->layout];
    const char * what = f->layout == SB_LAYOUT_NV12 ? (k ? " (the NV12 UV plane)" : " (the NV12 Y plane)") : "";
    if (!f->data[k]) {
        snprintf(err, errlen, "data[%d]%s is NULL", k, what);
        return SB_EINVAL;
    }
    if (f->stride[k] != 0 && f->stride[k] < row) {
        snprintf(err, errlen, "stride[%d]=%d is smaller than a row of %d %s %s (%lld bytes); pass the buffer's bytes "
                 "per row (V4L2 bytesperline, GStreamer's plane stride), or 0 for packed rows", k, f->stride[k],
                 f->width, layout_names[f->layout], f->layout == SB_LAYOUT_NV12 ? "bytes" : "pixels", row);
        return SB_EINVAL;
    }
    const unsigned long long needed = (unsigned long long) (rows - 1) * (unsigned long long) stride_of(f, k) +
                                      (unsigned long long) row;
    if (f->size[k] < needed) {
        snprintf(err, errlen, "size[%d]=%zu: data[%d]%s is too short for a %dx%d (WxH) %s frame with stride %d, "
                 "which needs %llu bytes; pass the whole buffer and its size, or check width, height, layout and "
                 "stride", k, f->size[k], k, what, f->width, f->height, layout_names[f->layout], stride_of(f, k),
                 needed);
        return SB_EINVAL;
    }
    return SB_OK;
}

int frame_check(const struct sb_frame * f, char * err, size_t errlen) {
    if (!f) {
        snprintf(err, errlen, "frame is NULL");
        return SB_EINVAL;
    }
    if ((int) f->layout < 0 || (int) f->layout >= N_LAYOUTS) {
        snprintf(err, errlen, "layout %d is not an enum sb_layout (SB_LAYOUT_RGB, _BGR, _RGBA, _BGRA or _NV12)",
                 (int) f->layout);
        return SB_EINVAL;
    }
    if (f->width <= 0 || f->height <= 0) {
        snprintf(err, errlen, "width and height must be > 0 (got %dx%d, WxH)", f->width, f->height);
        return SB_EINVAL;
    }
    if (f->width > INT32_MAX / 4) { /* rows of up to 4 bytes per pixel stay within int */
        snprintf(err, errlen, "width=%d is too large (at most %d)", f->width, INT32_MAX / 4);
        return SB_EINVAL;
    }
    if (f->layout == SB_LAYOUT_NV12 && (f->width % 2 || f->height % 2)) {
        snprintf(err, errlen, "an NV12 frame needs an even width and height (its chroma covers 2x2 blocks), got %dx%d "
                 "(WxH); crop it to even sides", f->width, f->height);
        return SB_EINVAL;
    }
    int rc = check_plane(f, 0, f->height, err, errlen);
    if (rc == SB_OK && f->layout == SB_LAYOUT_NV12) rc = check_plane(f, 1, f->height / 2, err, errlen);
    return rc;
}

bool frame_is_packed_rgb(const struct sb_frame * f) {
    return f->layout == SB_LAYOUT_RGB && stride_of(f, 0) == 3 * f->width;
}

static inline uint8_t clamp_q16(int32_t v) { /* v + 2^15, floor-shifted by 16, clamped to 0..255 */
    v += 1 << 15;
    return v < 0 ? 0 : v >= (256 << 16) ? 255 : (uint8_t) (v >> 16);
}

static void nv12_to_rgb(const struct sb_frame * f, uint8_t * rgb) {
    const int32_t * c = bt601[f->full_range ? 1 : 0];
    const size_t ys = (size_t) stride_of(f, 0), uvs = (size_t) stride_of(f, 1), w = (size_t) f->width;
    for (size_t r = 0; r < (size_t) f->height; r++) {
        const uint8_t * y = f->data[0] + r * ys;
        const uint8_t * uv = f->data[1] + (r / 2) * uvs;
        uint8_t * out = rgb + r * w * 3;
        for (size_t x = 0; x < w; x += 2) {
            const int32_t u = uv[x] - 128, v = uv[x + 1] - 128;
            const int32_t dr = c[2] * v, dg = -c[3] * u - c[4] * v, db = c[5] * u;
            for (size_t k = 0; k < 2; k++) {
                const int32_t luma = (y[x + k] - c[0]) * c[1];
                out[3 * (x + k)] = clamp_q16(luma + dr);
                out[3 * (x + k) + 1] = clamp_q16(luma + dg);
                out[3 * (x + k) + 2] = clamp_q16(luma + db);
            }
        }
    }
}

void frame_to_rgb(const struct sb_frame * f, uint8_t * rgb) {
    const size_t stride = (size_t) stride_of(f, 0), w = (size_t) f->width, bpp = (size_t) bytes_per_pixel[f->layout];
    if (f->layout == SB_LAYOUT_NV12) {
        nv12_to_rgb(f, rgb);
        return;
    }
    for (size_t r = 0; r < (size_t) f->height; r++) {
        const uint8_t * in = f->data[0] + r * stride;
        uint8_t * out = rgb + r * w * 3;
        if (f->layout == SB_LAYOUT_RGB) {
            memcpy(out, in, w * 3);
        } else if (f->layout == SB_LAYOUT_RGBA) {
            for (size_t x = 0; x < w; x++, in += bpp, out += 3) {
                out[0] = in[0]; out[1] = in[1]; out[2] = in[2];
            }
        } else { /* BGR, BGRA */
            for (size_t x = 0; x < w; x++, in += bpp, out += 3) {
                out[0] = in[2]; out[1] = in[1]; out[2] = in[0];
            }
        }
    }
}

int sb_frame_to_rgb(const struct sb_frame * frame, uint8_t * rgb_out, size_t rgb_size, char * err, size_t errlen) {
    char why[512];
    int rc = frame_check(frame, why, sizeof why);
    if (rc == SB_OK && !rgb_out) {
        snprintf(why, sizeof why, "rgb_out is NULL");
        rc = SB_EINVAL;
    } else if (rc == SB_OK && rgb_size / 3 / (size_t) frame->width < (size_t) frame->height) {
        snprintf(why, sizeof why, "rgb_size=%zu is smaller than width * height * 3 = %llu bytes", rgb_size,
                 (unsigned long long) frame->width * (unsigned long long) frame->height * 3);
        rc = SB_EINVAL;
    }
    if (err && errlen > 0) snprintf(err, errlen, "%s", rc == SB_OK ? "" : why);
    if (rc == SB_OK) frame_to_rgb(frame, rgb_out);
    return rc;
}
