/* camera - classify a stream of raw NV12 frames, as cameras and video decoders deliver them, with a semobridge model.
 *
 *   camera [--stride S] [--full-range] [--every N] [--scores] [--classes FILE] [--threads N] MODEL WIDTH HEIGHT FILE
 *
 * FILE holds frames back to back, each a Y plane (HEIGHT rows) then a UV plane (HEIGHT / 2 rows), rows S bytes apart
 * (default WIDTH: packed); "-" reads standard input, so a capture pipeline can feed it, e.g.
 *
 *   ffmpeg -i clip.mp4 -f rawvideo -pix_fmt nv12 - | camera model.onnx 640 480 -
 *   gst-launch-1.0 -q v4l2src ! videoconvert ! video/x-raw,format=NV12,width=640,height=480 ! fdsink \
 *       | camera model.onnx 640 480 -
 *
 * Frames go through sb_classify_frames without being converted here (BT.601, limited "video" range unless
 * --full-range). Per classified frame it prints "frame <index> <label> <score> <name>" (and with --scores a line
 * "  scores <s0> <s1> ..."); at the end, on stderr, the frames read, classified and frames/s. A trailing partial frame
 * is an input error. Exit codes (docs/errors.md): 0 ok, 2 input error, 3 model error, 4 runtime error.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "semobridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int exit_code(int rc) { return rc == SB_EINVAL ? 2 : rc == SB_EMODEL ? 3 : 4; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + 1e-9 * (double) t.tv_nsec;
}

static const char usage[] =
    "usage: camera [--stride S] [--full-range] [--every N] [--scores] [--classes FILE] [--threads N] "
    "MODEL WIDTH HEIGHT FILE|-\n"
    "  FILE           raw NV12 frames back to back (ffmpeg -f rawvideo -pix_fmt nv12); - reads standard input\n"
    "  --stride S     bytes from one row to the next in both planes (default WIDTH)\n"
    "  --full-range   full-range YUV (JPEG); default limited \"video\" range\n"
    "  --every N      classify every Nth frame (default 1)\n"
    "  --scores       also print every class score\n"
    "  --classes FILE a class file instead of the fitted classes\n"
    "  --threads N    ONNX Runtime intra-op threads, 0..256 (default 0: one per core)\n"
    "exit codes: 0 ok, 2 input error, 3 model error, 4 runtime error\n";

int main(int argc, char ** argv) {
    struct sb_params params = sb_default_params();
    struct sb_frame frame = sb_default_frame();
    struct sb_model * model = NULL;
    long stride = 0, every = 1, index = 0, classified = 0;
    int print_scores = 0, i = 1, rc = 0;
    char err[512];
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--full-range") == 0) frame.full_range = true;
        else if (strcmp(argv[i], "--scores") == 0) print_scores = 1;
        else if (strcmp(argv[i], "--stride") == 0 && i + 1 < argc) stride = atol(argv[++i]);
        else if (strcmp(argv[i], "--every") == 0 && i + 1 < argc) every = atol(argv[++i]);
        else if (strcmp(argv[i], "--classes") == 0 && i + 1 < argc) params.classes_path = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) params.intra_op_num_threads = atoi(argv[++i]);
        else break;
    }
    const long width = argc - i == 4 ? atol(argv[i + 1]) : 0, height = argc - i == 4 ? atol(argv[i + 2]) : 0;
    if (argc - i != 4 || width <= 0 || height <= 0 || width > SB_MAX_SIDE || height > SB_MAX_SIDE || every < 1 ||
        stride < 0 || stride > 4 * SB_MAX_SIDE) {
        fputs(usage, stderr);
        return 2;
    }
    if (stride == 0) stride = width;
    /* One frame: the Y plane (height rows) and the UV plane (height / 2 rows), `stride` bytes a row. The library
     * checks the geometry (even sides, stride >= width, plane sizes) and says what is wrong. */
    const size_t y_bytes = (size_t) stride * (size_t) height, frame_bytes = y_bytes + (size_t) stride * (size_t) (height / 2);
    uint8_t * buffer = malloc(frame_bytes);
    FILE * in = strcmp(argv[i + 3], "-") == 0 ? stdin : fopen(argv[i + 3], "rb");
    if (!buffer || !in) {
        fprintf(stderr, "camera: %s\n", buffer ? "cannot open the frame file" : "out of memory");
        free(buffer);
        return buffer ? 2 : 4;
    }
    frame.layout = SB_LAYOUT_NV12;
    frame.width = (int) width;
    frame.height = (int) height;
    frame.data[0] = buffer;
    frame.data[1] = buffer + y_bytes;
    frame.stride[0] = frame.stride[1] = (int) stride;
    frame.size[0] = y_bytes;
    frame.size[1] = frame_bytes - y_bytes;

    if ((rc = sb_load(argv[i], params, &model, err, sizeof err)) != SB_OK) {
        fprintf(stderr, "camera: %s\n", err);
        free(buffer);
        if (in != stdin) fclose(in);
        return exit_code(rc);
    }
    const int classes = sb_num_classes(model);
    float * scores = malloc(sizeof(float) * (size_t) classes);
    int64_t label = -1;
    double busy = 0;
    rc = scores ? 0 : 4;
    for (size_t got; rc == 0 && (got = fread(buffer, 1, frame_bytes, in)) > 0; index++) {
        if (got != frame_bytes) {
            fprintf(stderr, "camera: frame %ld is %zu bytes, short of %zu: is the file NV12 of %ldx%ld with stride "
                    "%ld?\n", index, got, frame_bytes, width, height, stride);
            rc = 2;
            break;
        }
        if (index % every != 0) continue;
        const double start = now();
        const int status = sb_classify_frames(model, &frame, 1, scores, &label);
        busy += now() - start;
        if (status != SB_OK) {
            fprintf(stderr, "camera: frame %ld: %s\n", index, sb_last_error(model));
            rc = exit_code(status);
            break;
        }
        classified++;
        printf("frame %ld %lld %.7g %s\n", index, (long long) label, scores[label], sb_class_name(model, (int) label));
        if (print_scores) {
            printf("  scores");
            for (int k = 0; k < classes; k++) printf(" %.9g", scores[k]);
            printf("\n");
        }
    }
    if (rc == 0 && ferror(in)) {
        fprintf(stderr, "camera: error reading the frames\n");
        rc = 2;
    }
    fprintf(stderr, "camera: %ld frames read, %ld classified, %.1f frames/s classifying\n", index, classified,
            busy > 0 ? (double) classified / busy : 0.0);
    free(scores);
    free(buffer);
    if (in != stdin) fclose(in);
    sb_close(model);
    return rc;
}
