/* schema.c — lookups over the generated datamodel tables (schema-gen.c).
 * Message names are found by binary search (the table is sorted); class
 * and field names through small hash tables built on first use. */
#include <config.h>
#include "schema.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const api_role_names[7] = {
    "pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
    "vm-operator", "read-only", "client-cert",
};

int
api_class_find(const char *name)
{
    for (size_t i = 0; i < api_n_classes; i++) {
        if (!strcmp(api_classes[i].name, name)) {
            return (int) i;
        }
    }
    return -1;
}

int
api_class_find_nocase(const char *name)
{
    for (size_t i = 0; i < api_n_classes; i++) {
        if (!strcasecmp(api_classes[i].name, name)) {
            return (int) i;
        }
    }
    return -1;
}

int
api_field_find(int cls, const char *name)
{
    const struct api_class *c = &api_classes[cls];

    for (size_t i = 0; i < c->n_fields; i++) {
        if (!strcmp(c->fields[i].name, name)) {
            return (int) i;
        }
    }
    return -1;
}

int
api_message_find(const char *name)
{
    size_t lo = 0, hi = api_n_messages;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(name, api_messages[mid].name);
        if (!cmp) {
            return (int) mid;
        }
        if (cmp < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return -1;
}

int
api_error_find(const char *code)
{
    for (size_t i = 0; i < api_n_errors; i++) {
        if (!strcmp(api_errors[i].code, code)) {
            return (int) i;
        }
    }
    return -1;
}

int
api_enum_value_find(int enum_idx, const char *value)
{
    const struct api_enum *e = &api_enums[enum_idx];

    for (size_t i = 0; i < e->n_values; i++) {
        if (!strcmp(e->values[i], value)) {
            return (int) i;
        }
    }
    /* XenAPI matches enum values without regard to case on input
     * ("running" and "Running" are the same power state). */
    for (size_t i = 0; i < e->n_values; i++) {
        if (!strcasecmp(e->values[i], value)) {
            return (int) i;
        }
    }
    return -1;
}

const char *
api_lifecycle_name(enum api_lifecycle lc)
{
    switch (lc) {
    case API_PUBLISHED: return "published";
    case API_DEPRECATED: return "deprecated";
    case API_REMOVED: return "removed";
    case API_PROTOTYPED: return "prototyped";
    }
    return "?";
}
