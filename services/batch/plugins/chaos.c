/* A word count that misbehaves at random, for the crash tests: with --arg "trap=P,spin=Q"
 * (per-mille per record), a record may trap (the attempt fails with the plugin's error) or
 * spin until its CPU budget runs out. The host's dice are seeded per attempt, so a retry of the
 * same task can succeed. */
#include "batch.h"

static u32 trap_per_mille, spin_per_mille;

static u32 parse_after(const char *arg, int len, const char *name, int name_len) {
    for (int i = 0; i + name_len < len; i++) {
        if (memcmp(arg + i, name, (size_t)name_len) == 0 && arg[i + name_len] == '=') {
            u32 n = 0;
            for (int j = i + name_len + 1; j < len && arg[j] >= '0' && arg[j] <= '9'; j++)
                n = n * 10 + (u32)(arg[j] - '0');
            return n;
        }
    }
    return 0;
}

EXPORT(init) void init(const char *arg, int arg_len) {
    trap_per_mille = parse_after(arg, arg_len, "trap", 4);
    spin_per_mille = parse_after(arg, arg_len, "spin", 4);
}

void map(const char *file, int file_len, const char *record, int len) {
    (void)file;
    (void)file_len;
    u32 dice = random_u32() % 1000;
    if (dice < trap_per_mille) __builtin_trap();
    if (dice < trap_per_mille + spin_per_mille) {
        volatile u32 spin = 0;
        for (;;) spin++;
    }
    emit_words(record, len, "1", 1);
}

void reduce(const char *key, int key_len, const char *values, int values_len, int count) {
    (void)values;
    (void)values_len;
    emit_count(key, key_len, count);
}
