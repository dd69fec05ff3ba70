/* strmap.h — an open-addressing hash table from strings to pointers, used
 * for the database's indices (ref, uuid, name_label) and elsewhere.  Keys
 * are borrowed: the caller keeps each key alive while it is in the map
 * (the database uses the row's own ref and uuid strings).  Not
 * thread-safe; callers lock. */
#ifndef STRMAP_H
#define STRMAP_H 1

#include <stddef.h>
#include <stdint.h>

struct strmap_slot {
    const char *key;        /* NULL: empty; STRMAP_TOMB: deleted */
    uint64_t hash;
    void *data;
};

struct strmap {
    struct strmap_slot *slots;
    size_t mask;            /* capacity - 1 (capacity is a power of 2) */
    size_t n;               /* live entries */
    size_t used;            /* live + tombstones */
};

void strmap_init(struct strmap *m);
void strmap_destroy(struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* Inserts or replaces; returns the previous data or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *data);
/* Removes; returns the data or NULL. */
void *strmap_remove(struct strmap *m, const char *key);
/* Iteration: for (size_t i = 0; strmap_next(m, &i, &k, &d); ) */
int strmap_next(const struct strmap *m, size_t *pos, const char **ret_key,
                void **ret_data);

#endif
