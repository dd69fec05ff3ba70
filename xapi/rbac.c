/* rbac.c — roles, permissions, subjects and external authentication.
 *
 * XenAPI's six roles are rows of the role class; pool-admin has the fixed
 * reference every client knows.  (Permissions, subjects and PAM logins
 * are built here by the RBAC work of issue 3.) */
#include <config.h>
#include "api.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct value **
new_fields(int cls, const char *uuid)
{
    struct value **f = xcalloc(api_classes[cls].n_fields, sizeof *f);

    f[api_classes[cls].uuid_field] = value_string(uuid);
    return f;
}

static int
insert(struct db_txn *txn, int cls, const char *ref, struct value **f)
{
    int rc = db_insert(txn, cls, ref, f, NULL);

    free(f);
    return rc;
}

/* The six roles of XenAPI.  pool-admin has the fixed reference every
 * XenAPI client knows (the default of subject.roles); the others get
 * references derived from their names, so they are the same on every host
 * of every pool.  Their permissions (subroles) arrive with RBAC. */
static const struct {
    const char *name;
    const char *description;
} roles[] = {
    { "pool-admin", "Can do everything, including changing roles and users." },
    { "pool-operator", "Can manage the pool and its hosts, but not users or roles." },
    { "vm-power-admin", "Can create and manage VMs, including their placement and migration." },
    { "vm-admin", "Can create, change and delete VMs and their devices." },
    { "vm-operator", "Can start, stop and use existing VMs." },
    { "read-only", "Can look at everything and change nothing." },
};

static void
role_uuid(const char *name, char *buf)
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    if (!strcmp(name, "pool-admin")) {
        strcpy(buf, "0165f154-ba3e-034e-6b27-5d271af109ba");
        return;
    }
    SHA256((const unsigned char *) name, strlen(name), md);
    md[6] = (md[6] & 0x0f) | 0x50;     /* a name-based uuid */
    md[8] = (md[8] & 0x3f) | 0x80;
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4],
             md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12],
             md[13], md[14], md[15]);
}

/* Creates any of the roles that is missing. */
int
rbac_init(struct xapi *x)
{
    struct db_txn *txn = db_begin(x->db);
    int rc = 0;

    for (size_t i = 0; i < ARRAY_SIZE(roles) && !rc; i++) {
        char uuid[40], ref[48];
        struct value **f;
        role_uuid(roles[i].name, uuid);
        snprintf(ref, sizeof ref, "OpaqueRef:%s", uuid);
        if (db_lookup(x->db, CLS_role, ref)) {
            continue;
        }
        f = new_fields(CLS_role, uuid);
        f[F_role_name_label] = value_string(roles[i].name);
        f[F_role_name_description] = value_string(roles[i].description);
        rc = insert(txn, CLS_role, ref, f);
    }
    if (rc) {
        db_abort(txn);
        return rc;
    }
    return db_commit(txn);
}


const struct api_handler_entry rbac_handlers[] = {
    { NULL, NULL },
};
