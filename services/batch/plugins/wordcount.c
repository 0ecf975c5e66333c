/* Word count: every run of letters is a word; the output is each word and how often it
 * occurs. Case matters, as in 6.5840's mrapps/wc. */
#include "batch.h"

void map(const char *file, int file_len, const char *record, int len) {
    (void)file;
    (void)file_len;
    emit_words(record, len, "1", 1);
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values;
    (void)values_len;
    emit_count(key, key_len, count);
}
