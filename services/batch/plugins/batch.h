/* The plugin interface of distlab's MapReduce (Project 4), for plugins written in C and built
 * for WebAssembly with clang (--target=wasm32, no libc). A plugin is one C file that includes
 * this header and defines map() and reduce(); the worker runs it sandboxed: no imports but the
 * ones below, so no file, clock or network; a memory limit; a CPU budget (fuel) per call.
 *
 * The host calls, per record:   batch_buffer(n), writes the input there, then
 *   map(file, file_len, record, record_len)          a line of an input file, and its name
 * per key:                      batch_buffer(n), writes the key and the values there, then
 *   reduce(key, key_len, values, values_len, count)  values: count x [u32 little-endian length][bytes]
 * and once before the first call, if the plugin defines it:
 *   init(arg, arg_len)                               the job's --arg text
 * A plugin may also export a combiner, with reduce's signature (EXPORT(combine)):
 *   combine(key, key_len, values, values_len, count) on a map task's own output
 * emitting only `key`, such that reduce(key, combine(some values) ++ the rest) gives what
 * reduce(key, all the values) gives (word count: partial sums). The map side then writes each
 * key once per task instead of once per occurrence: less to sort, spill and shuffle.
 * Both emit output pairs with emit(key, key_len, value, value_len). Memory handed out by
 * batch_alloc lasts until the next batch_buffer call. */

#ifndef DISTLAB_BATCH_H
#define DISTLAB_BATCH_H

typedef unsigned int u32;
typedef unsigned long size_t;

#ifdef BATCH_NATIVE
/* The same plugin built for the host instead of WebAssembly: the benchmark's "WebAssembly
 * against native" figure (build.rs builds word count this way). The build renames the entry
 * points and emit (-Dmap=wordcount_native_map ...) so nothing clashes with the host program,
 * the host's libc provides memcpy and friends, and there is no batch_alloc (the host does not
 * reset an arena between calls), so only plugins that do not allocate build natively. */
#define EXPORT(name)
#define IMPORT(name)
#else
#define EXPORT(name) __attribute__((export_name(#name)))
#define IMPORT(name) __attribute__((import_module("batch"), import_name(#name)))
#endif

IMPORT(emit) void emit(const char *key, int key_len, const char *value, int value_len);
/* A random number from the host, seeded per task attempt (the chaos plugin's dice). */
IMPORT(random_u32) u32 random_u32(void);

void map(const char *file, int file_len, const char *record, int record_len);
void reduce(const char *key, int key_len, const char *values, int values_len, int count);

#ifdef BATCH_NATIVE
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
#else
EXPORT(map) void batch_map(const char *f, int fl, const char *r, int rl) { map(f, fl, r, rl); }
EXPORT(reduce) void batch_reduce(const char *k, int kl, const char *v, int vl, int n) {
    reduce(k, kl, v, vl, n);
}

/* --- memory: a bump allocator over the heap, reset for each call ------------------------- */

extern unsigned char __heap_base;
static unsigned char *heap_top;

void *batch_alloc(size_t n) {
    if (!heap_top) heap_top = &__heap_base;
    unsigned char *p = (unsigned char *)(((size_t)heap_top + 7) & ~(size_t)7);
    size_t end = (size_t)p + n;
    size_t have = __builtin_wasm_memory_size(0) * 65536;
    if (end > have) {
        size_t pages = (end - have + 65535) / 65536;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) __builtin_trap(); /* over the limit */
    }
    heap_top = (unsigned char *)end;
    return p;
}

EXPORT(batch_buffer) void *batch_buffer(int len) {
    heap_top = &__heap_base;
    return batch_alloc((size_t)len);
}

/* clang may call these for copies and zeroing. */
void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}
void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dst;
}
void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}
int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}
#endif

/* --- helpers ------------------------------------------------------------------------------- */

static inline int is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Emits (word, value) for every run of letters in the record: the tokenizer of word count,
 * the indexer and the chaos plugin (6.5840's: a word is a maximal run of letters). */
static inline void emit_words(const char *record, int len, const char *value, int value_len) {
    int i = 0;
    while (i < len) {
        while (i < len && !is_letter(record[i])) i++;
        int start = i;
        while (i < len && is_letter(record[i])) i++;
        if (i > start) emit(record + start, i - start, value, value_len);
    }
}

/* Writes n in decimal into buf (at least 20 bytes); returns the length. */
static inline int format_u64(unsigned long long n, char *buf) {
    char tmp[20];
    int len = 0;
    do {
        tmp[len++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (int i = 0; i < len; i++) buf[i] = tmp[len - 1 - i];
    return len;
}

/* Emits (key, how many values it has): word count's reduce. */
static inline void emit_count(const char *key, int key_len, int count) {
    char digits[20];
    emit(key, key_len, digits, format_u64((unsigned long long)count, digits));
}

/* Parses a value as a decimal count (digits only; anything else ends it). */
static inline unsigned long long parse_u64(const char *text, int len) {
    unsigned long long n = 0;
    for (int i = 0; i < len && text[i] >= '0' && text[i] <= '9'; i++)
        n = n * 10 + (unsigned long long)(text[i] - '0');
    return n;
}

/* Walks reduce()'s values: the next value's bytes and length, advancing *at. */
static inline const char *next_value(const char *values, int *at, int *len) {
    const unsigned char *p = (const unsigned char *)values + *at;
    *len = (int)(p[0] | (p[1] << 8) | (p[2] << 16) | ((u32)p[3] << 24));
    *at += 4 + *len;
    return (const char *)p + 4;
}

/* Compares two byte strings as strcmp would order them. */
static inline int compare_bytes(const char *a, int al, const char *b, int bl) {
    int n = al < bl ? al : bl;
    int c = memcmp(a, b, (size_t)n);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

/* Emits (key, the sum of its values read as counts): a reduce, and a combiner, for counts. */
static inline void emit_sum(const char *key, int key_len, const char *values, int count) {
    unsigned long long sum = 0;
    int at = 0, len;
    for (int i = 0; i < count; i++) {
        const char *value = next_value(values, &at, &len);
        sum += parse_u64(value, len);
    }
    char digits[20];
    emit(key, key_len, digits, format_u64(sum, digits));
}

/* The file name after its last '/'. */
static inline const char *base_name(const char *file, int len, int *out_len) {
    int start = 0;
    for (int i = 0; i < len; i++)
        if (file[i] == '/') start = i + 1;
    *out_len = len - start;
    return file + start;
}

#endif
