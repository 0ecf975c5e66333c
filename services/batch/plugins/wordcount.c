/* Word count: every run of letters is a word; the output is each word and how often it
 * occurs. Case matters, as in 6.5840's mrapps/wc. */
#include "batch.h"

void map(const char *file, int file_len, const char *record, int len) {
    (void)file;
    (void)file_len;
    int i = 0;
    while (i < len) {
        while (i < len && !is_letter(record[i])) i++;
        int start = i;
        while (i < len && is_letter(record[i])) i++;
        if (i > start) emit(record + start, i - start, "1", 1);
    }
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values;
    (void)values_len;
    char digits[20];
    emit(key, key_len, digits, format_u64((unsigned long long)count, digits));
}
