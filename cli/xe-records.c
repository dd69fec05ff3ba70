/* xe-records.c — how xe shows and selects objects: record printing in
 * XenServer's layout, values as text (refs as the uuids of the objects they
 * name, enums in lower case, maps and sets), error messages, object
 * selectors (uuid=, vm=, field filters, --multiple) and the commands
 * generated for every class (<class>-list, -param-list, -param-get,
 * -param-set, -param-add, -param-remove, -param-clear).
 *
 * Everything a listing needs comes from one get_all_records(_where) call
 * plus, for fields naming other objects, one call per referenced class
 * (or a few get_uuid calls when only a handful of refs are needed): a
 * listing never makes a call per object. */
#include <config.h>
#include "xe.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

/* ---- classes and fields ---- */

const struct xe_class *
xe_class_by_api(const char *api)
{
    for (size_t i = 0; i < xe_n_classes; i++) {
        if (!strcmp(xe_classes[i].api, api)) {
            return &xe_classes[i];
        }
    }
    return NULL;
}

const struct xe_class *
xe_class_by_xe(const char *xe)
{
    for (size_t i = 0; i < xe_n_classes; i++) {
        if (!strcmp(xe_classes[i].xe, xe)) {
            return &xe_classes[i];
        }
    }
    return NULL;
}

const struct xe_field *
xe_field_by_xe(const struct xe_class *cls, const char *name)
{
    for (size_t i = 0; i < cls->n_fields; i++) {
        if (!strcmp(cls->fields[i].xe, name)) {
            return &cls->fields[i];
        }
    }
    /* Scripts write VCPUs-max and vcpus-max alike. */
    for (size_t i = 0; i < cls->n_fields; i++) {
        if (!strcasecmp(cls->fields[i].xe, name)) {
            return &cls->fields[i];
        }
    }
    return NULL;
}

/* A column of a listing: a field, or a property of the object a ref field
 * names ("vm-uuid", "vm-name-label", "sr-uuid"), as XenServer's records
 * offer for the usual references. */
struct column {
    const char *name;           /* as printed */
    const struct xe_field *field;
    int via;                    /* 0: the field; 1: target uuid; 2: target name */
};

static bool
resolve_column(const struct xe_class *cls, const char *name,
               struct column *ret_col)
{
    const struct xe_field *f = xe_field_by_xe(cls, name);
    static const struct { const char *suffix; int via; } vias[] = {
        { "-uuid", 1 }, { "-name-label", 2 },
    };

    if (f) {
        *ret_col = (struct column) { f->xe, f, 0 };
        return true;
    }
    for (size_t i = 0; i < ARRAY_SIZE(vias); i++) {
        size_t n = strlen(name), m = strlen(vias[i].suffix);
        if (n > m && !strcmp(name + n - m, vias[i].suffix)) {
            char *base = xmemdup0(name, n - m);
            f = xe_field_by_xe(cls, base);
            free(base);
            if (f && f->kind == XE_REF) {
                *ret_col = (struct column) { name, f, vias[i].via };
                return true;
            }
        }
    }
    return false;
}

/* ---- errors ---- */

static const struct xe_error *
error_find(const char *code)
{
    size_t lo = 0, hi = xe_n_errors;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(code, xe_errors[mid].code);
        if (!c) {
            return &xe_errors[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

void
xe_print_api_error(const struct value *ed)
{
    const struct xe_error *def;
    const char *code, *names;
    size_t n;

    if (!ed || ed->type != VALUE_ARRAY || ed->u.arr.n == 0
        || !value_is_string(ed->u.arr.items[0])) {
        fprintf(stderr, "Error: the server reported a failure\n");
        return;
    }
    code = ed->u.arr.items[0]->u.str.s;
    n = ed->u.arr.n - 1;
    fprintf(stderr, "Error code: %s\nError parameters: ", code);
    for (size_t i = 0; i < n; i++) {
        char *t = value_is_string(ed->u.arr.items[i + 1])
                  ? NULL : value_to_text(ed->u.arr.items[i + 1]);
        fprintf(stderr, "%s%s", i ? ", " : "",
                t ? t : ed->u.arr.items[i + 1]->u.str.s);
        free(t);
    }
    fputc('\n', stderr);
    def = error_find(code);
    names = def ? def->params : "";
    /* Name each parameter as the error table does, so that a reader need
     * not know the order. */
    for (size_t i = 0; i < n && *names; i++) {
        const char *bar = strchr(names, '|');
        size_t len = bar ? (size_t)(bar - names) : strlen(names);
        const struct value *p = ed->u.arr.items[i + 1];
        if (value_is_string(p)) {
            fprintf(stderr, "%.*s: %s\n", (int)len, names, p->u.str.s);
        }
        names += len + (bar ? 1 : 0);
    }
}

int
xe_missing(const char *param)
{
    fprintf(stderr, "Error: missing parameter: %s\n", param);
    return -1;
}

void
xe_free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* ---- refs to uuids ---- */

struct ref_info {
    char *uuid;
    char *name;
};

/* One process runs one command on one connection, so a file-level cache
 * is enough. */
static struct strmap ref_cache;
static bool ref_cache_ready;

static void
ref_cache_init(void)
{
    if (!ref_cache_ready) {
        strmap_init(&ref_cache);
        ref_cache_ready = true;
    }
}

static void
ref_cache_put(const char *ref, const char *uuid, const char *name)
{
    struct ref_info *ri = xcalloc(1, sizeof *ri + strlen(ref) + 1);
    char *key = (char *)(ri + 1);

    strcpy(key, ref);
    ri->uuid = uuid ? xstrdup(uuid) : NULL;
    ri->name = name ? xstrdup(name) : NULL;
    ri = strmap_put(&ref_cache, key, ri);
    if (ri) {
        free(ri->uuid);
        free(ri->name);
        free(ri);
    }
}

static bool
is_null_ref(const char *ref)
{
    return !*ref || !strcmp(ref, "OpaqueRef:NULL");
}

/* Fetches uuids (and names) of refs of one class: the whole class when
 * many are wanted, else one call per ref. */
static void
ref_cache_fill(struct xe_conn *conn, const char *cls, char **refs, size_t n)
{
    char method[128];
    struct value *v = NULL;

    const struct xe_class *c = xe_class_by_api(cls);

    ref_cache_init();
    if (n > 16 && c && c->listable) {
        snprintf(method, sizeof method, "%s.get_all_records", cls);
        if (xe_callv(conn, method, &v, NULL) == 0 && v->type == VALUE_STRUCT) {
            for (size_t i = 0; i < v->u.st.n; i++) {
                struct value *r = v->u.st.m[i].v;
                ref_cache_put(v->u.st.m[i].name,
                              value_struct_get_string(r, "uuid"),
                              value_struct_get_string(r, "name_label"));
            }
        }
        value_unref(v);
    }
    /* Refs the class listing did not hold (or all of them, when few were
     * wanted) are looked up one by one by xe_ref_uuid(). */
    (void)refs;
}

const char *
xe_ref_uuid(struct xe_conn *conn, const char *cls, const char *ref)
{
    struct ref_info *ri;
    char method[128];
    struct value *v = NULL;

    if (is_null_ref(ref)) {
        return "<not in database>";
    }
    ref_cache_init();
    ri = strmap_get(&ref_cache, ref);
    if (!ri) {
        snprintf(method, sizeof method, "%s.get_uuid", cls);
        if (xe_callv(conn, method, &v, ref, NULL) == 0 && value_is_string(v)) {
            ref_cache_put(ref, v->u.str.s, NULL);
        } else {
            ref_cache_put(ref, NULL, NULL);
        }
        value_unref(v);
        ri = strmap_get(&ref_cache, ref);
    }
    return ri->uuid ? ri->uuid : "<not in database>";
}

static const char *
ref_name(struct xe_conn *conn, const char *cls, const char *ref)
{
    struct ref_info *ri;
    char method[128];
    struct value *v = NULL;

    if (is_null_ref(ref)) {
        return "<not in database>";
    }
    ref_cache_init();
    ri = strmap_get(&ref_cache, ref);
    if (!ri || !ri->name) {
        snprintf(method, sizeof method, "%s.get_name_label", cls);
        if (xe_callv(conn, method, &v, ref, NULL) == 0 && value_is_string(v)) {
            ref_cache_put(ref, ri ? ri->uuid : NULL, v->u.str.s);
        }
        value_unref(v);
        ri = strmap_get(&ref_cache, ref);
    }
    return ri && ri->name ? ri->name : "<not in database>";
}

/* ---- values as text ---- */

static void
put_lower(struct ds *out, const char *s)
{
    for (; *s; s++) {
        ds_put_char(out, (char)tolower((unsigned char)*s));
    }
}

static void
format_scalar(struct xe_conn *conn, enum xe_kind kind, const char *ref_class,
              const struct value *v, struct ds *out)
{
    switch (v->type) {
    case VALUE_STRING:
        if (kind == XE_ENUM) {
            put_lower(out, v->u.str.s);
        } else if (kind == XE_REF && ref_class) {
            ds_put_cstr(out, xe_ref_uuid(conn, ref_class, v->u.str.s));
        } else {
            ds_put(out, v->u.str.s, v->u.str.len);
        }
        break;
    case VALUE_DATETIME:
        ds_put(out, v->u.str.s, v->u.str.len);
        break;
    case VALUE_INT:
        ds_put_int(out, v->u.i);
        break;
    case VALUE_BOOL:
        ds_put_cstr(out, v->u.b ? "true" : "false");
        break;
    case VALUE_DOUBLE:
        ds_put_fmt(out, "%g", v->u.d);
        break;
    case VALUE_NIL:
        break;
    default: {
        char *t = value_to_text(v);
        ds_put_cstr(out, t);
        free(t);
        break;
    }
    }
}

static void
format_value(struct xe_conn *conn, const struct column *col,
             const struct value *v, struct ds *out)
{
    const struct xe_field *f = col->field;

    if (!v) {
        return;
    }
    if (col->via && value_is_string(v)) {
        ds_put_cstr(out, col->via == 1
                         ? xe_ref_uuid(conn, f->ref_class, v->u.str.s)
                         : ref_name(conn, f->ref_class, v->u.str.s));
        return;
    }
    if (v->type == VALUE_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                ds_put_cstr(out, "; ");
            }
            format_scalar(conn, f->elem, f->ref_class, v->u.arr.items[i], out);
        }
    } else if (v->type == VALUE_STRUCT) {
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (i) {
                ds_put_cstr(out, "; ");
            }
            ds_put_cstr(out, v->u.st.m[i].name);
            ds_put_cstr(out, ": ");
            format_scalar(conn, f->elem, NULL, v->u.st.m[i].v, out);
        }
    } else {
        format_scalar(conn, f->kind, f->ref_class, v, out);
    }
}

/* Collects the refs that columns will show, per class, and resolves them
 * together, so that printing makes no call per object. */
static void
prefetch_refs(struct xe_conn *conn, const struct column *cols, size_t n_cols,
              const struct value *records)
{
    struct strmap by_class;
    const char *key;
    void *data;

    ref_cache_init();
    strmap_init(&by_class);
    for (size_t c = 0; c < n_cols; c++) {
        const struct xe_field *f = cols[c].field;
        if (!f->ref_class) {
            continue;
        }
        struct ds *list = strmap_get(&by_class, f->ref_class);
        if (!list) {
            list = xcalloc(1, sizeof *list);
            strmap_put(&by_class, f->ref_class, list);
        }
        for (size_t i = 0; i < records->u.st.n; i++) {
            const struct value *v = value_struct_get(records->u.st.m[i].v,
                                                     f->api);
            size_t m = v && v->type == VALUE_ARRAY ? v->u.arr.n : 1;
            for (size_t j = 0; v && j < m; j++) {
                const struct value *r = v->type == VALUE_ARRAY
                                        ? v->u.arr.items[j] : v;
                if (value_is_string(r) && !is_null_ref(r->u.str.s)
                    && !strmap_get(&ref_cache, r->u.str.s)) {
                    ds_put(list, &r, sizeof r);
                }
            }
        }
    }
    for (size_t pos = 0; strmap_next(&by_class, &pos, &key, &data);) {
        struct ds *list = data;
        size_t n = list->len / sizeof(struct value *);
        struct value **vals = (struct value **)list->s;
        if (n > 16) {
            char **refs = xcalloc(n, sizeof *refs);
            for (size_t i = 0; i < n; i++) {
                refs[i] = vals[i]->u.str.s;
            }
            ref_cache_fill(conn, key, refs, n);
            free(refs);
        }
        ds_destroy(list);
        free(list);
    }
    strmap_destroy(&by_class);
}

/* ---- listings ---- */

/* The columns a listing shows when params= is not given, as XenServer's
 * records mark them. */
static const struct {
    const char *cls;
    const char *params;
} default_params[] = {
    { "VM", "uuid,name-label,power-state" },
    { "host", "uuid,name-label,name-description" },
    { "SR", "uuid,name-label,name-description,host,type,content-type" },
    { "VDI", "uuid,name-label,name-description,sr-uuid,virtual-size,"
             "sharable,read-only" },
    { "VBD", "uuid,vm-uuid,vm-name-label,vdi-uuid,empty,device" },
    { "VIF", "uuid,vm-uuid,device,network-uuid" },
    { "PIF", "uuid,device,currently-attached,VLAN,network-uuid" },
    { "PBD", "uuid,host-uuid,sr-uuid,device-config,currently-attached" },
    { "network", "uuid,name-label,name-description,bridge" },
    { "task", "uuid,name-label,name-description,status,progress" },
    { "pool", "uuid,name-label,name-description,master,default-SR" },
    { "subject", "uuid,subject-identifier,other-config,roles" },
    { "role", "uuid,name,description" },
    { "message", "uuid,name,priority,class,obj-uuid,timestamp,body" },
    { "console", "uuid,vm-uuid,protocol,location" },
    { "host_cpu", "uuid,number,vendor,speed,modelname" },
    { "SM", "uuid,name-label,type,vendor" },
    { "secret", "uuid,value" },
};

static char *
default_columns(const struct xe_class *cls)
{
    struct ds ds = DS_EMPTY;

    for (size_t i = 0; i < ARRAY_SIZE(default_params); i++) {
        if (!strcmp(default_params[i].cls, cls->api)) {
            return xstrdup(default_params[i].params);
        }
    }
    ds_put_cstr(&ds, "uuid");
    if (xe_field_by_xe(cls, "name-label")) {
        ds_put_cstr(&ds, ",name-label");
    }
    if (xe_field_by_xe(cls, "name-description")) {
        ds_put_cstr(&ds, ",name-description");
    }
    return ds_steal(&ds);
}

/* Parses params= into columns; "all" is every field.  Unknown names are
 * reported and make the command fail. */
static int
parse_columns(const struct xe_class *cls, const char *params,
              struct column **ret_cols, size_t *ret_n)
{
    struct column *cols = NULL;
    size_t n = 0;
    char *copy = NULL, *save = NULL;
    int rc = -1;

    if (params && !strcmp(params, "all")) {
        cols = xcalloc(cls->n_fields, sizeof *cols);
        for (size_t i = 0; i < cls->n_fields; i++) {
            cols[n++] = (struct column) { cls->fields[i].xe, &cls->fields[i], 0 };
        }
    } else {
        copy = params ? xstrdup(params) : default_columns(cls);
        cols = xcalloc(strlen(copy) / 2 + 2, sizeof *cols);
        for (char *tok = strtok_r(copy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            if (!*tok) {
                continue;
            }
            if (!resolve_column(cls, tok, &cols[n])) {
                /* Default columns name fields some classes lack (sr's
                 * host): skip them quietly; a user's choice is checked. */
                if (params) {
                    fprintf(stderr, "Error: unknown field '%s' for class %s\n",
                            tok, cls->xe);
                    goto out;
                }
                continue;
            }
            /* The name must outlive copy. */
            cols[n].name = cols[n].via ? xstrdup(tok) : cols[n].field->xe;
            n++;
        }
    }
    *ret_cols = cols;
    *ret_n = n;
    cols = NULL;
    rc = 0;
out:
    free(cols);
    free(copy);
    return rc;
}

static void
free_columns(struct column *cols, size_t n)
{
    for (size_t i = 0; cols && i < n; i++) {
        if (cols[i].via) {
            free((char *)cols[i].name);
        }
    }
    free(cols);
}

static const char *
marker(const struct column *col)
{
    const struct xe_field *f = col->field;

    if (col->via) {
        return "( RO)";
    }
    if (f->kind == XE_MAP) {
        return f->rw ? "(MRW)" : "(MRO)";
    }
    if (f->kind == XE_SET) {
        return f->rw ? "(SRW)" : "(SRO)";
    }
    return f->rw ? "( RW)" : "( RO)";
}

void
xe_print_minimal_list(char **items, size_t n)
{
    struct ds out = DS_EMPTY;

    for (size_t i = 0; i < n; i++) {
        if (i) {
            ds_put_char(&out, ',');
        }
        for (const char *p = items[i]; *p; p++) {
            if (*p == ',' || *p == '\\') {
                ds_put_char(&out, '\\');
            }
            ds_put_char(&out, *p);
        }
    }
    ds_put_char(&out, '\n');
    fwrite(out.s, 1, out.len, stdout);
    ds_destroy(&out);
}

/* Filters are the arguments that name fields (name-label=foo); they match
 * the value as printed, so power-state=running works. */
struct filter {
    struct column col;
    const char *value;
};

/* True if name is one of the comma-separated names of list. */
static bool
in_list(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) {
            return true;
        }
        p += len + (comma ? 1 : 0);
    }
    return false;
}

bool
xe_is_command_param(const struct xe_cmd *cmd, const char *key)
{
    static const char *const common = "force,multiple,minimal,params";
    const char *colon = strchr(key, ':');

    if (in_list(common, key)) {
        return true;
    }
    if (!cmd) {
        return false;
    }
    if (colon) {
        /* Map parameters are listed as "device-config:". */
        char *prefix = xmemdup0(key, (size_t)(colon - key) + 1);
        bool found = in_list(cmd->optn, prefix) || in_list(cmd->reqd, prefix);
        free(prefix);
        return found;
    }
    return in_list(cmd->reqd, key) || in_list(cmd->optn, key);
}

static int
collect_filters(const struct xe_class *cls, struct xe_args *args,
                struct filter **ret_f, size_t *ret_n)
{
    struct filter *f = xcalloc(args->n + 1, sizeof *f);
    size_t n = 0;

    for (size_t i = 0; i < args->n; i++) {
        struct xe_arg *a = &args->v[i];
        if (a->used || xe_is_command_param(args->cmd, a->key)) {
            continue;
        }
        if (!resolve_column(cls, a->key, &f[n].col)) {
            fprintf(stderr, "Error: unknown parameter or field '%s' for "
                    "class %s\n", a->key, cls->xe);
            free(f);
            return -1;
        }
        a->used = true;
        f[n++].value = a->value;
    }
    *ret_f = f;
    *ret_n = n;
    return 0;
}

static bool
record_matches(struct xe_conn *conn, const struct value *rec,
               const struct filter *f, size_t n, struct ds *scratch)
{
    for (size_t i = 0; i < n; i++) {
        ds_clear(scratch);
        format_value(conn, &f[i].col, value_struct_get(rec, f[i].col.field->api),
                     scratch);
        if (strcmp(scratch->s ? scratch->s : "", f[i].value)) {
            return false;
        }
    }
    return true;
}

static int
print_filtered(struct xe_conn *conn, const struct xe_class *cls,
               struct value *records, const char *params, bool minimal,
               const struct filter *filters, size_t n_filters)
{
    struct column *cols = NULL;
    size_t n_cols = 0, width = 0;
    struct ds out = DS_EMPTY, val = DS_EMPTY, scratch = DS_EMPTY;
    bool first_item = true;
    int rc = -1;

    if (parse_columns(cls, params, &cols, &n_cols) < 0) {
        goto out;
    }
    if (records->type != VALUE_STRUCT) {
        fprintf(stderr, "Error: unexpected answer from the server\n");
        goto out;
    }
    prefetch_refs(conn, cols, minimal && n_cols ? 1 : n_cols, records);
    for (size_t c = 0; c < n_cols; c++) {
        width = MAX(width, strlen(cols[c].name));
    }
    width += 4;
    for (size_t i = 0; i < records->u.st.n; i++) {
        const struct value *rec = records->u.st.m[i].v;
        if (n_filters && !record_matches(conn, rec, filters, n_filters,
                                         &scratch)) {
            continue;
        }
        if (minimal) {
            if (!n_cols) {
                continue;
            }
            ds_clear(&val);
            format_value(conn, &cols[0],
                         value_struct_get(rec, cols[0].field->api), &val);
            if (!first_item) {
                ds_put_char(&out, ',');
            }
            for (size_t k = 0; k < val.len; k++) {
                if (val.s[k] == ',' || val.s[k] == '\\') {
                    ds_put_char(&out, '\\');
                }
                ds_put_char(&out, val.s[k]);
            }
            first_item = false;
            continue;
        }
        for (size_t c = 0; c < n_cols; c++) {
            ds_clear(&val);
            format_value(conn, &cols[c],
                         value_struct_get(rec, cols[c].field->api), &val);
            /* The first name is padded on the right, the others on the
             * left: XenServer's layout, which scripts rely on. */
            ds_put_fmt(&out, c == 0 ? "%-*s %s: %s\n" : "%*s %s: %s\n",
                       (int)width, cols[c].name, marker(&cols[c]),
                       val.s ? val.s : "");
        }
        ds_put_char(&out, '\n');
        if (out.len > (1 << 20)) {
            fwrite(out.s, 1, out.len, stdout);
            ds_clear(&out);
        }
    }
    if (minimal) {
        ds_put_char(&out, '\n');
    }
    fwrite(out.s ? out.s : "", 1, out.len, stdout);
    rc = 0;
out:
    free_columns(cols, n_cols);
    ds_destroy(&out);
    ds_destroy(&val);
    ds_destroy(&scratch);
    return rc;
}

int
xe_print_records(struct xe_conn *conn, const struct xe_class *cls,
                 struct value *records, const char *params, bool minimal)
{
    return print_filtered(conn, cls, records, params, minimal, NULL, 0);
}

/* ---- selection ---- */

static int
fetch_records(struct xe_conn *conn, const struct xe_class *cls,
              const char *where, struct value **ret)
{
    char method[128];

    if (where) {
        snprintf(method, sizeof method, "%s.get_all_records_where", cls->api);
        return xe_callv(conn, method, ret, where, NULL);
    }
    snprintf(method, sizeof method, "%s.get_all_records", cls->api);
    return xe_callv(conn, method, ret, NULL);
}

int
xe_lookup(struct xe_conn *conn, const char *api_class, const char *key,
          bool by_name, char **ret_ref)
{
    char method[128];
    struct value *v = NULL;

    snprintf(method, sizeof method, "%s.%s", api_class,
             by_name ? "get_by_name_label" : "get_by_uuid");
    if (xe_callv(conn, method, &v, key, NULL)) {
        return -1;
    }
    if (by_name) {
        if (v->type != VALUE_ARRAY || v->u.arr.n != 1) {
            fprintf(stderr, "Error: %s %s named '%s'\n",
                    v->type == VALUE_ARRAY && v->u.arr.n ? "several objects of class"
                    : "no object of class", api_class, key);
            value_unref(v);
            return -1;
        }
        *ret_ref = xstrdup(v->u.arr.items[0]->u.str.s);
    } else {
        *ret_ref = xstrdup(value_is_string(v) ? v->u.str.s : "");
    }
    value_unref(v);
    return 0;
}

int
xe_select(struct xe_conn *conn, const struct xe_class *cls,
          const char *selector_key, struct xe_args *args, bool allow_multiple,
          char ***ret_refs, size_t *ret_n)
{
    const char *uuid = xe_arg_get(args, "uuid");
    const char *sel = selector_key ? xe_arg_get(args, selector_key) : NULL;
    bool multiple = xe_arg_flag(args, "multiple");
    struct value *records = NULL, *list = NULL;
    struct filter *filters = NULL;
    struct ds scratch = DS_EMPTY;
    char **refs = NULL;
    size_t n = 0, n_filters = 0;
    const char *where = NULL;
    int rc = -1;

    if (collect_filters(cls, args, &filters, &n_filters) < 0) {
        goto out;
    }
    if (uuid && !sel && !n_filters) {
        refs = xcalloc(1, sizeof *refs);
        if (xe_lookup(conn, cls->api, uuid, false, &refs[0]) == 0) {
            n = 1;
            rc = 0;
        }
        goto done;
    }
    if (!uuid && !sel && !n_filters && !multiple
        && strcmp(cls->api, "host")) {
        fprintf(stderr, "Error: no %s selected: give uuid=, %s= or field "
                "filters (with --multiple for several)\n", cls->xe,
                selector_key ? selector_key : "uuid");
        goto out;
    }
    if (!strcmp(cls->api, "VM") && !uuid) {
        /* Selectors act on guests: not on templates, snapshots or the
         * control domain, as in XenServer. */
        where = "field \"is_a_template\" = \"false\" and field "
                "\"is_a_snapshot\" = \"false\" and field "
                "\"is_control_domain\" = \"false\"";
    }
    if (fetch_records(conn, cls, where, &records)) {
        goto out;
    }
    refs = xcalloc(records->u.st.n + 1, sizeof *refs);
    for (size_t i = 0; i < records->u.st.n; i++) {
        const struct value *rec = records->u.st.m[i].v;
        const char *ru = value_struct_get_string(rec, "uuid");
        const char *rn = value_struct_get_string(rec, "name_label");
        if (uuid && (!ru || strcmp(ru, uuid))) {
            continue;
        }
        if (sel && !((ru && !strcmp(ru, sel)) || (rn && !strcmp(rn, sel)))) {
            continue;
        }
        if (!record_matches(conn, rec, filters, n_filters, &scratch)) {
            continue;
        }
        refs[n++] = xstrdup(records->u.st.m[i].name);
    }
    if (n == 0) {
        fprintf(stderr, "Error: no matching %ss found\n", cls->xe);
        goto done;
    }
    /* With no selector at all, a host command acts on the only host. */
    if (n > 1 && !(allow_multiple && multiple)) {
        fprintf(stderr, "Error: %zu %ss match; add --multiple to act on all "
                "of them\n", n, cls->xe);
        goto done;
    }
    rc = 0;
done:
    if (rc == 0) {
        *ret_refs = refs;
        *ret_n = n;
        refs = NULL;
    }
out:
    xe_free_strv(refs, n);
    free(filters);
    ds_destroy(&scratch);
    value_unref(records);
    value_unref(list);
    return rc;
}

/* ---- generated class commands ---- */

static const char *const class_ops[] = {
    "list", "param-list", "param-get", "param-set", "param-add",
    "param-remove", "param-clear",
};

/* Views of the VM class, as XenServer offers them. */
static const struct {
    const char *xe;
    const char *where;
} vm_views[] = {
    { "vm", "field \"is_a_template\" = \"false\" and field "
            "\"is_a_snapshot\" = \"false\"" },
    { "template", "field \"is_a_template\" = \"true\" and field "
                  "\"is_a_snapshot\" = \"false\"" },
    { "snapshot", "field \"is_a_snapshot\" = \"true\"" },
};

static const char *
view_where(const char *xe)
{
    for (size_t i = 0; i < ARRAY_SIZE(vm_views); i++) {
        if (!strcmp(vm_views[i].xe, xe)) {
            return vm_views[i].where;
        }
    }
    return NULL;
}

int
xe_class_command(const char *name, const struct xe_class **ret_cls,
                 const char **ret_op, const char **ret_where)
{
    for (size_t i = 0; i < ARRAY_SIZE(class_ops); i++) {
        size_t n = strlen(name), m = strlen(class_ops[i]);
        if (n > m + 1 && name[n - m - 1] == '-'
            && !strcmp(name + n - m, class_ops[i])) {
            char *cls_name = xmemdup0(name, n - m - 1);
            const struct xe_class *cls = view_where(cls_name)
                                         ? xe_class_by_api("VM")
                                         : xe_class_by_xe(cls_name);
            if (cls && cls->listable) {
                *ret_cls = cls;
                *ret_op = class_ops[i];
                *ret_where = view_where(cls_name);
                free(cls_name);
                return 0;
            }
            free(cls_name);
        }
    }
    return -1;
}

/* Converts text given on the command line to the field's API type. */
static int
text_to_value(struct xe_conn *conn, enum xe_kind kind, const char *ref_class,
              const char *text, struct value **ret)
{
    int64_t i;
    double d;
    char *ref = NULL;

    switch (kind) {
    case XE_INT:
        if (str_to_int64(text, &i)) {
            fprintf(stderr, "Error: '%s' is not an integer\n", text);
            return -1;
        }
        *ret = value_int(i);
        return 0;
    case XE_FLOAT:
        if (str_to_double(text, &d)) {
            fprintf(stderr, "Error: '%s' is not a number\n", text);
            return -1;
        }
        *ret = value_double(d);
        return 0;
    case XE_BOOL:
        if (!strcasecmp(text, "true") || !strcasecmp(text, "yes")
            || !strcmp(text, "1") || !strcasecmp(text, "on")) {
            *ret = value_true();
        } else if (!strcasecmp(text, "false") || !strcasecmp(text, "no")
                   || !strcmp(text, "0") || !strcasecmp(text, "off")) {
            *ret = value_false();
        } else {
            fprintf(stderr, "Error: '%s' is not a boolean\n", text);
            return -1;
        }
        return 0;
    case XE_DATETIME:
        *ret = value_datetime(text);
        return 0;
    case XE_REF:
        if (!*text || !strcmp(text, "<not in database>")) {
            *ret = value_null_ref();
            return 0;
        }
        if (str_starts_with(text, "OpaqueRef:")) {
            *ret = value_string(text);
            return 0;
        }
        if (xe_lookup(conn, ref_class, text, false, &ref)) {
            return -1;
        }
        *ret = value_string_take(ref);
        return 0;
    default:
        *ret = value_string(text);
        return 0;
    }
}

static int
call_field(struct xe_conn *conn, const struct xe_class *cls, const char *verb,
           const struct xe_field *f, const char *ref, struct value *a,
           struct value *b)
{
    char method[160];
    struct value *params = value_array(3), *v = NULL;
    int rc;

    snprintf(method, sizeof method, "%s.%s_%s", cls->api, verb, f->api);
    value_array_append(params, value_string(ref));
    if (a) {
        value_array_append(params, a);
    }
    if (b) {
        value_array_append(params, b);
    }
    rc = xe_call(conn, method, params, &v);
    value_unref(params);
    value_unref(v);
    return rc;
}

static int
param_set(struct xe_cmd_ctx *ctx, const char *ref)
{
    const struct xe_class *cls = ctx->cls;

    for (size_t i = 0; i < ctx->args->n; i++) {
        struct xe_arg *a = &ctx->args->v[i];
        const char *colon = strchr(a->key, ':');
        const struct xe_field *f;
        struct value *v = NULL;

        if (a->used) {
            continue;
        }
        a->used = true;
        if (colon) {
            /* map:key=value sets one key, as remove then add. */
            char *fname = xmemdup0(a->key, (size_t)(colon - a->key));
            f = xe_field_by_xe(cls, fname);
            free(fname);
            if (!f || f->kind != XE_MAP) {
                fprintf(stderr, "Error: '%.*s' is not a map field of %s\n",
                        (int)(colon - a->key), a->key, cls->xe);
                return -1;
            }
            call_field(ctx->conn, cls, "remove_from", f, ref,
                       value_string(colon + 1), NULL);
            if (call_field(ctx->conn, cls, "add_to", f, ref,
                           value_string(colon + 1), value_string(a->value))) {
                return -1;
            }
            continue;
        }
        f = xe_field_by_xe(cls, a->key);
        if (!f) {
            fprintf(stderr, "Error: unknown field '%s' for class %s\n",
                    a->key, cls->xe);
            return -1;
        }
        if (!f->rw) {
            fprintf(stderr, "Error: field '%s' is read-only\n", f->xe);
            return -1;
        }
        if (f->kind == XE_SET) {
            struct value *arr = value_array(4);
            char *copy = xstrdup(a->value), *save = NULL;
            for (char *t = strtok_r(copy, ";,", &save); t;
                 t = strtok_r(NULL, ";,", &save)) {
                while (*t == ' ') {
                    t++;
                }
                if (*t) {
                    struct value *item = NULL;
                    if (text_to_value(ctx->conn, f->elem, f->ref_class, t,
                                      &item)) {
                        free(copy);
                        value_unref(arr);
                        return -1;
                    }
                    value_array_append(arr, item);
                }
            }
            free(copy);
            v = arr;
        } else if (f->kind == XE_MAP) {
            fprintf(stderr, "Error: set map keys with %s:KEY=VALUE\n", f->xe);
            return -1;
        } else if (text_to_value(ctx->conn, f->kind, f->ref_class, a->value,
                                 &v)) {
            return -1;
        }
        if (call_field(ctx->conn, cls, "set", f, ref, v, NULL)) {
            return -1;
        }
    }
    return 0;
}

static const struct xe_field *
param_name_field(struct xe_cmd_ctx *ctx)
{
    const char *name = xe_arg_get(ctx->args, "param-name");
    const struct xe_field *f;

    if (!name) {
        xe_missing("param-name");
        return NULL;
    }
    f = xe_field_by_xe(ctx->cls, name);
    if (!f) {
        fprintf(stderr, "Error: unknown field '%s' for class %s\n", name,
                ctx->cls->xe);
    }
    return f;
}

static int
param_get(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *name = xe_arg_get(ctx->args, "param-name");
    const char *key = xe_arg_get(ctx->args, "param-key");
    struct value *rec = NULL;
    struct ds out = DS_EMPTY;
    struct column col;
    char method[128];
    int rc = -1;

    if (!name) {
        return xe_missing("param-name");
    }
    if (!resolve_column(ctx->cls, name, &col)) {
        fprintf(stderr, "Error: unknown field '%s' for class %s\n", name,
                ctx->cls->xe);
        return -1;
    }
    snprintf(method, sizeof method, "%s.get_%s", ctx->cls->api, col.field->api);
    if (xe_callv(ctx->conn, method, &rec, ref, NULL)) {
        goto out;
    }
    if (key) {
        struct value *v = rec->type == VALUE_STRUCT
                          ? value_struct_get(rec, key) : NULL;
        if (!v) {
            fprintf(stderr, "Error: key '%s' is not in %s\n", key, name);
            goto out;
        }
        format_scalar(ctx->conn, col.field->elem, NULL, v, &out);
    } else {
        format_value(ctx->conn, &col, rec, &out);
    }
    printf("%s\n", out.s ? out.s : "");
    rc = 0;
out:
    ds_destroy(&out);
    value_unref(rec);
    return rc;
}

static int
param_add(struct xe_cmd_ctx *ctx, const char *ref)
{
    const struct xe_field *f = param_name_field(ctx);
    const char *key = xe_arg_get(ctx->args, "param-key");

    if (!f) {
        return -1;
    }
    if (f->kind == XE_SET) {
        struct value *item = NULL;
        if (!key) {
            return xe_missing("param-key");
        }
        if (text_to_value(ctx->conn, f->elem, f->ref_class, key, &item)) {
            return -1;
        }
        return call_field(ctx->conn, ctx->cls, "add", f, ref, item, NULL);
    }
    if (f->kind != XE_MAP) {
        fprintf(stderr, "Error: '%s' is neither a map nor a set\n", f->xe);
        return -1;
    }
    /* Maps take the new keys as key=value arguments. */
    for (size_t i = 0; i < ctx->args->n; i++) {
        struct xe_arg *a = &ctx->args->v[i];
        if (a->used) {
            continue;
        }
        a->used = true;
        if (call_field(ctx->conn, ctx->cls, "add_to", f, ref,
                       value_string(a->key), value_string(a->value))) {
            return -1;
        }
    }
    return 0;
}

static int
param_remove(struct xe_cmd_ctx *ctx, const char *ref)
{
    const struct xe_field *f = param_name_field(ctx);
    const char *key = xe_arg_get(ctx->args, "param-key");
    struct value *item = NULL;

    if (!f) {
        return -1;
    }
    if (!key) {
        return xe_missing("param-key");
    }
    if (f->kind == XE_MAP) {
        return call_field(ctx->conn, ctx->cls, "remove_from", f, ref,
                          value_string(key), NULL);
    }
    if (f->kind != XE_SET) {
        fprintf(stderr, "Error: '%s' is neither a map nor a set\n", f->xe);
        return -1;
    }
    if (text_to_value(ctx->conn, f->elem, f->ref_class, key, &item)) {
        return -1;
    }
    return call_field(ctx->conn, ctx->cls, "remove", f, ref, item, NULL);
}

static int
param_clear(struct xe_cmd_ctx *ctx, const char *ref)
{
    const struct xe_field *f = param_name_field(ctx);
    struct value *v;

    if (!f) {
        return -1;
    }
    if (!f->rw) {
        fprintf(stderr, "Error: field '%s' is read-only\n", f->xe);
        return -1;
    }
    switch (f->kind) {
    case XE_MAP:
        v = value_empty_struct();
        break;
    case XE_SET:
        v = value_empty_array();
        break;
    case XE_STRING:
        v = value_empty_string();
        break;
    case XE_REF:
        v = value_null_ref();
        break;
    default:
        fprintf(stderr, "Error: field '%s' cannot be cleared\n", f->xe);
        return -1;
    }
    return call_field(ctx->conn, ctx->cls, "set", f, ref, v, NULL);
}

static int
param_list(struct xe_cmd_ctx *ctx, const char *ref)
{
    char method[128];
    struct value *rec = NULL, *records = NULL;
    int rc;

    snprintf(method, sizeof method, "%s.get_record", ctx->cls->api);
    if (xe_callv(ctx->conn, method, &rec, ref, NULL)) {
        return -1;
    }
    records = value_struct(1);
    value_struct_put(records, ref, rec);
    rc = xe_print_records(ctx->conn, ctx->cls, records, "all", false);
    value_unref(records);
    return rc;
}

static int
class_list(struct xe_cmd_ctx *ctx)
{
    const char *params = xe_arg_get(ctx->args, "params");
    struct value *records = NULL;
    struct filter *filters = NULL;
    size_t n_filters = 0;
    int rc = -1;

    xe_arg_flag(ctx->args, "minimal");
    if (collect_filters(ctx->cls, ctx->args, &filters, &n_filters) < 0) {
        goto out;
    }
    if (fetch_records(ctx->conn, ctx->cls, ctx->where, &records)) {
        goto out;
    }
    rc = print_filtered(ctx->conn, ctx->cls, records, params, ctx->minimal,
                        filters, n_filters);
out:
    free(filters);
    value_unref(records);
    return rc;
}

int
xe_run_class_command(struct xe_cmd_ctx *ctx, const char *op)
{
    const char *uuid;
    char *ref = NULL;
    int rc = -1;

    if (!strcmp(op, "list")) {
        return class_list(ctx);
    }
    uuid = xe_arg_get(ctx->args, "uuid");
    if (!uuid) {
        return xe_missing("uuid");
    }
    if (xe_lookup(ctx->conn, ctx->cls->api, uuid, false, &ref)) {
        return -1;
    }
    if (!strcmp(op, "param-list")) {
        rc = param_list(ctx, ref);
    } else if (!strcmp(op, "param-get")) {
        rc = param_get(ctx, ref);
    } else if (!strcmp(op, "param-set")) {
        rc = param_set(ctx, ref);
    } else if (!strcmp(op, "param-add")) {
        rc = param_add(ctx, ref);
    } else if (!strcmp(op, "param-remove")) {
        rc = param_remove(ctx, ref);
    } else if (!strcmp(op, "param-clear")) {
        rc = param_clear(ctx, ref);
    }
    free(ref);
    return rc;
}

void
xe_class_command_help(const struct xe_class *cls, const char *op)
{
    static const struct {
        const char *op, *usage, *what;
    } texts[] = {
        { "list", "[params=<f1,f2,...|all>] [<field>=<value>...] [--minimal]",
          "Shows the objects of the class, those whose fields match the "
          "given values only." },
        { "param-list", "uuid=<uuid>", "Shows every field of one object." },
        { "param-get", "uuid=<uuid> param-name=<field> [param-key=<key>]",
          "Prints one field, or one key of a map field." },
        { "param-set", "uuid=<uuid> <field>=<value>... <map>:<key>=<value>...",
          "Changes writable fields, or single keys of map fields." },
        { "param-add", "uuid=<uuid> param-name=<field> [<key>=<value>...] "
                       "[param-key=<item>]",
          "Adds keys to a map field, or an item to a set field." },
        { "param-remove", "uuid=<uuid> param-name=<field> param-key=<key>",
          "Removes a key from a map field, or an item from a set field." },
        { "param-clear", "uuid=<uuid> param-name=<field>",
          "Empties a writable field." },
    };
    for (size_t i = 0; i < ARRAY_SIZE(texts); i++) {
        if (!strcmp(texts[i].op, op)) {
            printf("command name: %s-%s\n  reqd params: %s\n\n%s\n", cls->xe, op,
                   texts[i].usage, texts[i].what);
        }
    }
}
