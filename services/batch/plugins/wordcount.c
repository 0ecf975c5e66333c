/* Word count: every run of letters is a word; the output is each word and how often it
 * occurs. Case matters, as in 6.5840's mrapps/wc. Its combiner sums a map's own counts, so
 * a map task writes each word once with its count instead of once per occurrence. */
#include "batch.h"

void map(const char *file, int file_len, const char *record, int len) {
    (void)file;
    (void)file_len;
    emit_words(record, len, "1", 1);
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values_len;
    emit_sum(key, key_len, values, count);
}

EXPORT(combine) void combine(const char *key, int key_len, const char *values, int values_len,
                             int count) {
    reduce(key, key_len, values, values_len, count);
}
