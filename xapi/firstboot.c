/* firstboot.c — fills the database on first start and refreshes this
 * host's records on every start.
 *
 * A standalone host is a pool of one: the first start creates the pool,
 * the host with its host_metrics and host_cpu rows, and the control
 * domain (dom0) with its VM_metrics, all in one transaction.  The host's
 * identity is kept in STATE_DIR/inventory (INSTALLATION_UUID and
 * CONTROL_DOMAIN_UUID, as in XenServer's xensource-inventory), so a
 * restart finds its own rows again. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xenops/xenops.h"

#define API_VERSION_MAJOR 2
#define API_VERSION_MINOR 21

static struct value *
string_map(const char *const *kv)
{
    struct value *m = value_struct(8);

    for (size_t i = 0; kv[i]; i += 2) {
        value_struct_put(m, kv[i], value_string(kv[i + 1]));
    }
    return m;
}

static struct value *
software_version(const struct xenops_host_info *info)
{
    const char *kv[] = {
        "product_brand", "XAPI-C",
        "product_version", PACKAGE_VERSION,
        "product_version_text", PACKAGE_VERSION,
        "product_version_text_short", PACKAGE_VERSION,
        "platform_name", "XCP",
        "platform_version", "3.4.0",
        "build_number", "0",
        "xapi", "24.10",
        "xapi_build", PACKAGE_VERSION,
        "xen", info->xen_version,
        "hostname", info->hostname,
        "date", __DATE__,
        NULL,
    };
    return string_map(kv);
}

static struct value *
cpu_info_map(const struct xenops_host_info *info)
{
    char count[16], speed[32], family[16], model[16], stepping[16];
    const char *kv[] = {
        "cpu_count", count, "socket_count", "1", "vendor", info->cpu.vendor,
        "speed", speed, "modelname", info->cpu.model_name, "family", family,
        "model", model, "stepping", stepping, "flags", info->cpu.flags,
        NULL,
    };

    snprintf(count, sizeof count, "%d", info->n_cpus);
    snprintf(speed, sizeof speed, "%lld.000", (long long) info->cpu.speed_mhz);
    snprintf(family, sizeof family, "%d", info->cpu.family);
    snprintf(model, sizeof model, "%d", info->cpu.model);
    snprintf(stepping, sizeof stepping, "%d", info->cpu.stepping);
    return string_map(kv);
}

static struct value *
string_set(const char *text)
{
    struct value *arr = value_array(8);
    char *copy = xstrdup(text), *save = NULL;

    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        value_array_append(arr, value_string(t));
    }
    free(copy);
    return arr;
}

static int
create_everything(struct xapi *x, const struct xenops_host_info *info,
                  const char *host_uuid, const char *dom0_uuid)
{
    char pool_ref[48], metrics_ref[48], dom0_ref[48], vmm_ref[48];
    char uuid[40];
    struct db_txn *txn = db_begin(x->db);
    struct value **f;
    int64_t now = time_wall_ms() / 1000;
    int rc;

    db_new_ref(x->host_ref);
    db_new_ref(pool_ref);
    db_new_ref(metrics_ref);
    db_new_ref(dom0_ref);
    db_new_ref(vmm_ref);

    uuid_generate(uuid);
    f = db_fields_new(CLS_host_metrics, uuid);
    f[F_host_metrics_memory_total] = value_int(info->memory_total);
    f[F_host_metrics_memory_free] = value_int(info->memory_free);
    f[F_host_metrics_live] = value_true();
    f[F_host_metrics_last_updated] = value_datetime_secs(now);
    rc = db_insert_fields(txn, CLS_host_metrics, metrics_ref, f);

    f = db_fields_new(CLS_host, host_uuid);
    f[F_host_name_label] = value_string(info->hostname);
    f[F_host_name_description] = value_string("Default install");
    f[F_host_API_version_major] = value_int(API_VERSION_MAJOR);
    f[F_host_API_version_minor] = value_int(API_VERSION_MINOR);
    f[F_host_API_version_vendor] = value_string("XenSource");
    f[F_host_enabled] = value_true();
    f[F_host_software_version] = software_version(info);
    f[F_host_capabilities] = string_set(info->capabilities);
    f[F_host_sched_policy] = value_string("credit");
    f[F_host_supported_bootloaders] = string_set("pygrub eliloader");
    f[F_host_cpu_info] = cpu_info_map(info);
    f[F_host_hostname] = value_string(info->hostname);
    f[F_host_address] = value_string("127.0.0.1");
    f[F_host_metrics] = value_string(metrics_ref);
    f[F_host_edition] = value_string("free");
    f[F_host_control_domain] = value_string(dom0_ref);
    rc = rc ? rc : db_insert_fields(txn, CLS_host, x->host_ref, f);

    for (int i = 0; i < info->n_cpus && !rc; i++) {
        char ref[48];
        db_new_ref(ref);
        uuid_generate(uuid);
        f = db_fields_new(CLS_host_cpu, uuid);
        f[F_host_cpu_host] = value_string(x->host_ref);
        f[F_host_cpu_number] = value_int(i);
        f[F_host_cpu_vendor] = value_string(info->cpu.vendor);
        f[F_host_cpu_speed] = value_int(info->cpu.speed_mhz);
        f[F_host_cpu_modelname] = value_string(info->cpu.model_name);
        f[F_host_cpu_family] = value_int(info->cpu.family);
        f[F_host_cpu_model] = value_int(info->cpu.model);
        f[F_host_cpu_stepping] = value_stringf("%d", info->cpu.stepping);
        f[F_host_cpu_flags] = value_string(info->cpu.flags);
        f[F_host_cpu_features] = value_empty_string();
        f[F_host_cpu_utilisation] = value_double(0);
        rc = db_insert_fields(txn, CLS_host_cpu, ref, f);
    }

    uuid_generate(uuid);
    f = db_fields_new(CLS_VM_metrics, uuid);
    f[F_VM_metrics_memory_actual] = value_int(info->dom0_memory);
    f[F_VM_metrics_VCPUs_number] = value_int(info->dom0_vcpus);
    f[F_VM_metrics_state] = string_set("running");
    f[F_VM_metrics_start_time] = value_datetime_secs(now);
    f[F_VM_metrics_install_time] = value_datetime_secs(now);
    f[F_VM_metrics_last_updated] = value_datetime_secs(now);
    rc = rc ? rc : db_insert_fields(txn, CLS_VM_metrics, vmm_ref, f);

    f = db_fields_new(CLS_VM, dom0_uuid);
    f[F_VM_name_label] = value_stringf("Control domain on host: %s",
                                       info->hostname);
    f[F_VM_name_description] = value_string("The domain which manages "
                                             "physical devices and "
                                             "manages other domains");
    f[F_VM_power_state] = value_string("Running");
    f[F_VM_user_version] = value_int(1);
    f[F_VM_is_a_template] = value_false();
    f[F_VM_resident_on] = value_string(x->host_ref);
    f[F_VM_affinity] = value_string(x->host_ref);
    f[F_VM_memory_target] = value_int(info->dom0_memory);
    f[F_VM_memory_static_max] = value_int(info->dom0_memory);
    f[F_VM_memory_dynamic_max] = value_int(info->dom0_memory);
    f[F_VM_memory_dynamic_min] = value_int(info->dom0_memory);
    f[F_VM_memory_static_min] = value_int(info->dom0_memory);
    f[F_VM_VCPUs_max] = value_int(info->dom0_vcpus);
    f[F_VM_VCPUs_at_startup] = value_int(info->dom0_vcpus);
    f[F_VM_actions_after_shutdown] = value_string("destroy");
    f[F_VM_actions_after_reboot] = value_string("restart");
    f[F_VM_actions_after_crash] = value_string("restart");
    f[F_VM_domid] = value_int(0);
    f[F_VM_is_control_domain] = value_true();
    f[F_VM_metrics] = value_string(vmm_ref);
    f[F_VM_domain_type] = value_string("pv");
    rc = rc ? rc : db_insert_fields(txn, CLS_VM, dom0_ref, f);

    uuid_generate(uuid);
    f = db_fields_new(CLS_pool, uuid);
    f[F_pool_master] = value_string(x->host_ref);
    f[F_pool_cpu_info] = cpu_info_map(info);
    rc = rc ? rc : db_insert_fields(txn, CLS_pool, pool_ref, f);

    if (rc) {
        db_abort(txn);
        return rc;
    }
    memcpy(x->pool_ref, pool_ref, sizeof pool_ref);
    return db_commit(txn);
}

/* Updates what the host reports about itself on every start. */
static int
refresh_host(struct xapi *x, const struct xenops_host_info *info)
{
    struct db_txn *txn = db_begin(x->db);
    struct db_row *host = db_lookup(x->db, CLS_host, x->host_ref);
    struct value *m;

    db_update(txn, CLS_host, x->host_ref, F_host_software_version,
              software_version(info));
    db_update(txn, CLS_host, x->host_ref, F_host_cpu_info, cpu_info_map(info));
    db_update(txn, CLS_host, x->host_ref, F_host_API_version_major,
              value_int(API_VERSION_MAJOR));
    db_update(txn, CLS_host, x->host_ref, F_host_API_version_minor,
              value_int(API_VERSION_MINOR));
    m = host->fields[F_host_metrics];
    if (db_lookup(x->db, CLS_host_metrics, m->u.str.s)) {
        char *mref = xstrdup(m->u.str.s);
        db_update(txn, CLS_host_metrics, mref, F_host_metrics_memory_total,
                  value_int(info->memory_total));
        db_update(txn, CLS_host_metrics, mref, F_host_metrics_memory_free,
                  value_int(info->memory_free));
        db_update(txn, CLS_host_metrics, mref, F_host_metrics_live, value_true());
        db_update(txn, CLS_host_metrics, mref, F_host_metrics_last_updated,
                  value_datetime_secs(time_wall_ms() / 1000));
        free(mref);
    }
    return db_commit(txn);
}

static char *
inventory_get(const char *text, const char *key)
{
    size_t klen = strlen(key);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, klen) && p[klen] == '=') {
            const char *v = p + klen + 1, *end = strchr(v, '\n');
            size_t n = end ? (size_t) (end - v) : strlen(v);
            if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'') {
                v++;
                n -= 2;
            }
            return xmemdup0(v, n);
        }
    }
    return NULL;
}

int
firstboot_init(struct xapi *x, char **ret_err)
{
    struct xenops_host_info info;
    char *inv_path = xasprintf("%s/inventory", x->state_dir);
    char *inv = NULL, *host_uuid = NULL, *dom0_uuid = NULL;
    struct db_row *host;
    size_t len;
    int rc;

    rc = xenops_host_info(x->xenops, &info, ret_err);
    if (rc) {
        goto out;
    }
    if (!read_file(inv_path, 65536, &inv, &len)) {
        host_uuid = inventory_get(inv, "INSTALLATION_UUID");
        dom0_uuid = inventory_get(inv, "CONTROL_DOMAIN_UUID");
    }
    db_read_lock(x->db);
    host = host_uuid ? db_lookup_uuid(x->db, CLS_host, host_uuid) : NULL;
    if (host) {
        snprintf(x->host_ref, sizeof x->host_ref, "%s", host->ref);
        if (db_table_count(x->db, CLS_pool)) {
            snprintf(x->pool_ref, sizeof x->pool_ref, "%s",
                     db_table_row(x->db, CLS_pool, 0)->ref);
        }
    }
    db_read_unlock(x->db);
    if (!host) {
        char hu[40], du[40], *text;
        if (db_table_count(x->db, CLS_host)) {
            *ret_err = xasprintf("the database holds hosts but %s does not "
                                 "name one of them", inv_path);
            rc = -EINVAL;
            goto out;
        }
        uuid_generate(hu);
        uuid_generate(du);
        /* The inventory is written first: if we die before the commit,
         * the next start finds no host with that uuid and starts over. */
        text = xasprintf("INSTALLATION_UUID='%s'\nCONTROL_DOMAIN_UUID='%s'\n",
                         hu, du);
        rc = write_file_atomic(inv_path, text, strlen(text), 0644);
        free(text);
        if (!rc) {
            rc = create_everything(x, &info, hu, du);
        }
        if (rc) {
            *ret_err = xasprintf("cannot initialise the database: %s",
                                 strerror(-rc));
            goto out;
        }
        snprintf(x->host_uuid, sizeof x->host_uuid, "%s", hu);
        LOG_INFO("first start: created pool, host %s and control domain", hu);
    } else {
        snprintf(x->host_uuid, sizeof x->host_uuid, "%s", host_uuid);
        rc = refresh_host(x, &info);
        if (rc) {
            *ret_err = xasprintf("cannot update the host record: %s",
                                 strerror(-rc));
            goto out;
        }
    }
    rc = rbac_init(x);
    if (rc) {
        *ret_err = xasprintf("cannot create the roles: %s", strerror(-rc));
        goto out;
    }
    rc = templates_ensure(x);
    if (rc) {
        *ret_err = xasprintf("cannot create the templates: %s", strerror(-rc));
    }
out:
    free(inv_path);
    free(inv);
    free(host_uuid);
    free(dom0_uuid);
    return rc;
}
