/* Join of two inputs on their first comma-separated field. Records of files whose name starts
 * with the job's --arg are the left side, all others the right; for every key, each left
 * record is paired with each right one: `key  left-rest|right-rest`. */
#include "batch.h"

static char left_prefix[256];
static int left_prefix_len;

EXPORT(init) void init(const char *arg, int arg_len) {
    if (arg_len > (int)sizeof left_prefix) __builtin_trap();
    memcpy(left_prefix, arg, (size_t)arg_len);
    left_prefix_len = arg_len;
}

void map(const char *file, int file_len, const char *record, int len) {
    int name_len;
    const char *name = base_name(file, file_len, &name_len);
    int left = name_len >= left_prefix_len && memcmp(name, left_prefix, (size_t)left_prefix_len) == 0;
    int comma = 0;
    while (comma < len && record[comma] != ',') comma++;
    int rest = comma < len ? len - comma - 1 : 0;
    char *value = batch_alloc((size_t)rest + 1);
    value[0] = left ? 'L' : 'R';
    memcpy(value + 1, record + comma + 1, (size_t)rest);
    emit(record, comma, value, rest + 1);
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values_len;
    int at = 0;
    for (int a = 0; a < count; a++) {
        int left_len;
        const char *left = next_value(values, &at, &left_len);
        if (left[0] != 'L') continue;
        int at2 = 0;
        for (int b = 0; b < count; b++) {
            int right_len;
            const char *right = next_value(values, &at2, &right_len);
            if (right[0] != 'R') continue;
            int n = (left_len - 1) + 1 + (right_len - 1);
            char *out = batch_alloc((size_t)n);
            memcpy(out, left + 1, (size_t)(left_len - 1));
            out[left_len - 1] = '|';
            memcpy(out + left_len, right + 1, (size_t)(right_len - 1));
            emit(key, key_len, out, n);
        }
    }
}
