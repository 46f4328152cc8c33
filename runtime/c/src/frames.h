/* frames.h - camera frames (struct sb_frame) to packed RGB: checks and conversion. See semobridge.h. */
#ifndef SB_FRAMES_H
#define SB_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "semobridge.h"

/* SB_OK, or SB_EINVAL with the reason in err: layout, sides, NULL planes, strides, even NV12 sides, plane sizes. */
int frame_check(const struct sb_frame * f, char * err, size_t errlen);

/* Whether a checked frame is already packed RGB (usable in place as the model's input). */
bool frame_is_packed_rgb(const struct sb_frame * f);

/* A checked frame's pixels as packed RGB rows into rgb (width * height * 3 bytes). */
void frame_to_rgb(const struct sb_frame * f, uint8_t * rgb);

#endif
