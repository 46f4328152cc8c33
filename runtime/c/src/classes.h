/* classes.h - class sets and class files (docs/classes.md). Internal to the library (not installed).
 *
 * A class set is immutable once made and reference-counted (atomically), so a reader that holds a
 * reference sees one whole set however often the model's current set is swapped; it holds no ONNX
 * Runtime object, so it may be released after its model is closed.
 */
#ifndef SB_CLASSES_H
#define SB_CLASSES_H

#include <stdatomic.h>
#include <stddef.h>

#include "contract.h" /* SB_HEAD_INPUTS, SB_HEAD_INPUT_NAMES, SB_OPEN_SET_SCORES */

/* The graph inputs of a class set, in the order of `values` (docs/classes.md). */
extern const char * const sb_head_inputs[SB_HEAD_INPUTS];
/* The abstention scores a model or class file may name; a score's index is the graph's mcm_weight for it. */
extern const char * const sb_open_set_scores[SB_OPEN_SET_SCORES];

struct sb_classes {
    atomic_int refs;
    const void * owner; /* the model it was made for */
    int count, dim;
    float * values;      /* text_classifier, bridged_prototypes, image_prototypes [count, dim] and class_kl [count],
                            one after the other; NULL for the fitted classes (the graph's defaults) */
    char * names_buf;    /* the names, each NUL-terminated */
    char ** names;
    double temperature, threshold; /* the set's open set (a class file's metadata); NAN: none, the model's applies */
    int score;                     /* the abstention score of that threshold (sb_open_set_scores index); -1: none */
};

/* What a class file must match: the model's backbone (name for messages), weights and bridge hashes, and width. */
struct class_identity {
    const char * backbone;
    const char * weights_hash;
    size_t weights_hash_len;
    const char * bridge_hash;
    size_t bridge_hash_len;
    int embedding_dim;
};

/* The fitted classes of `owner` from its '\n'-joined names (values NULL), checked as class files' names are. SB_OK or
 * an SB_E* code with a message in err. */
int classes_fitted(const void * owner, const char * joined, struct sb_classes ** out, char * err, size_t errlen);

/* Read and check a class file for `owner` (docs/classes.md, "Reading one"). SB_OK, or an SB_E* code with a message in
 * err and *out untouched. */
int classes_read(const void * owner, const char * path, const struct class_identity * id, struct sb_classes ** out,
                 char * err, size_t errlen);

/* The index of abstention score name[0, len) in SB_OPEN_SET_SCORE_NAMES, or -1 (NULL or another name). */
int classes_score_index(const char * name, size_t len);

void classes_retain(struct sb_classes * c);
void classes_release(struct sb_classes * c); /* frees the set with its last reference; NULL is allowed */

#endif /* SB_CLASSES_H */
