/* Grep: the lines that contain the job's --arg text, keyed by the file they are in. */
#include "batch.h"

static const char *pattern;
static int pattern_len;

EXPORT(init) void init(const char *arg, int arg_len) {
    /* The arg lives in the buffer the next call reuses: keep a copy below the heap's reach. */
    static char kept[4096];
    if (arg_len > (int)sizeof kept) __builtin_trap();
    memcpy(kept, arg, (size_t)arg_len);
    pattern = kept;
    pattern_len = arg_len;
}

static int contains(const char *s, int len) {
    if (pattern_len == 0) return 1;
    for (int i = 0; i + pattern_len <= len; i++)
        if (memcmp(s + i, pattern, (size_t)pattern_len) == 0) return 1;
    return 0;
}

void map(const char *file, int file_len, const char *record, int len) {
    int name_len;
    const char *name = base_name(file, file_len, &name_len);
    if (contains(record, len)) emit(name, name_len, record, len);
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values_len;
    int at = 0;
    for (int v = 0; v < count; v++) {
        int len;
        const char *line = next_value(values, &at, &len);
        emit(key, key_len, line, len);
    }
}
