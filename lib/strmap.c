/* strmap.c — see strmap.h.  Linear probing with tombstones; the table
 * doubles at 70% occupancy (counting tombstones) so probes stay short. */
#include <config.h>
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char strmap_tomb[1];
#define STRMAP_TOMB strmap_tomb

void
strmap_init(struct strmap *m)
{
    memset(m, 0, sizeof *m);
}

void
strmap_destroy(struct strmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static void
strmap_grow(struct strmap *m)
{
    size_t cap = m->slots ? (m->n * 2 < m->mask + 1 ? m->mask + 1 : (m->mask + 1) * 2) : 16;
    struct strmap_slot *old = m->slots;
    size_t old_cap = m->slots ? m->mask + 1 : 0;

    m->slots = xcalloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    m->used = m->n;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key && old[i].key != STRMAP_TOMB) {
            size_t j = old[i].hash & m->mask;
            while (m->slots[j].key) {
                j = (j + 1) & m->mask;
            }
            m->slots[j] = old[i];
        }
    }
    free(old);
}

void *
strmap_get(const struct strmap *m, const char *key)
{
    uint64_t h;
    size_t i;

    if (!m->slots) {
        return NULL;
    }
    h = hash_string(key, 0);
    for (i = h & m->mask; m->slots[i].key; i = (i + 1) & m->mask) {
        if (m->slots[i].key != STRMAP_TOMB && m->slots[i].hash == h
            && !strcmp(m->slots[i].key, key)) {
            return m->slots[i].data;
        }
    }
    return NULL;
}

void *
strmap_put(struct strmap *m, const char *key, void *data)
{
    uint64_t h = hash_string(key, 0);
    size_t i, tomb = SIZE_MAX;

    if (!m->slots || (m->used + 1) * 10 > (m->mask + 1) * 7) {
        strmap_grow(m);
    }
    for (i = h & m->mask; m->slots[i].key; i = (i + 1) & m->mask) {
        if (m->slots[i].key == STRMAP_TOMB) {
            if (tomb == SIZE_MAX) {
                tomb = i;
            }
        } else if (m->slots[i].hash == h && !strcmp(m->slots[i].key, key)) {
            void *old = m->slots[i].data;
            m->slots[i].key = key;
            m->slots[i].data = data;
            return old;
        }
    }
    if (tomb != SIZE_MAX) {
        i = tomb;
    } else {
        m->used++;
    }
    m->slots[i].key = key;
    m->slots[i].hash = h;
    m->slots[i].data = data;
    m->n++;
    return NULL;
}

void *
strmap_remove(struct strmap *m, const char *key)
{
    uint64_t h;
    size_t i;

    if (!m->slots) {
        return NULL;
    }
    h = hash_string(key, 0);
    for (i = h & m->mask; m->slots[i].key; i = (i + 1) & m->mask) {
        if (m->slots[i].key != STRMAP_TOMB && m->slots[i].hash == h
            && !strcmp(m->slots[i].key, key)) {
            void *data = m->slots[i].data;
            m->slots[i].key = STRMAP_TOMB;
            m->slots[i].data = NULL;
            m->n--;
            return data;
        }
    }
    return NULL;
}

int
strmap_next(const struct strmap *m, size_t *pos, const char **ret_key,
            void **ret_data)
{
    if (!m->slots) {
        return 0;
    }
    for (size_t i = *pos; i <= m->mask; i++) {
        if (m->slots[i].key && m->slots[i].key != STRMAP_TOMB) {
            *ret_key = m->slots[i].key;
            *ret_data = m->slots[i].data;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = m->mask + 1;
    return 0;
}
