/* Inverted index (6.5840's mrapps/indexer): for every word, how many input files contain it
 * and which, as `word  N file1,file2,...` with the files sorted. */
#include "batch.h"

void map(const char *file, int file_len, const char *record, int len) {
    int name_len;
    const char *name = base_name(file, file_len, &name_len);
    emit_words(record, len, name, name_len);
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values_len;
    /* The distinct file names, sorted (insertion sort: a word is in few files). */
    const char **names = batch_alloc(sizeof(char *) * (size_t)count);
    int *lens = batch_alloc(sizeof(int) * (size_t)count);
    int distinct = 0, at = 0, total = 0;
    for (int v = 0; v < count; v++) {
        int len;
        const char *name = next_value(values, &at, &len);
        int pos = 0, seen = 0;
        while (pos < distinct) {
            int c = compare_bytes(names[pos], lens[pos], name, len);
            if (c == 0) { seen = 1; break; }
            if (c > 0) break;
            pos++;
        }
        if (seen) continue;
        for (int j = distinct; j > pos; j--) {
            names[j] = names[j - 1];
            lens[j] = lens[j - 1];
        }
        names[pos] = name;
        lens[pos] = len;
        distinct++;
        total += len + 1;
    }
    char *out = batch_alloc((size_t)(total + 24));
    int n = format_u64((unsigned long long)distinct, out);
    out[n++] = ' ';
    for (int j = 0; j < distinct; j++) {
        if (j) out[n++] = ',';
        memcpy(out + n, names[j], (size_t)lens[j]);
        n += lens[j];
    }
    emit(key, key_len, out, n);
}
