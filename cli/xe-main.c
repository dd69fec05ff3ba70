/* xe-main.c — the entry point of xe: the global options and ~/.xe, the
 * command line in XenServer's key=value syntax, `xe help`, and dispatch to
 * the command table (xe-commands.c) or to the commands generated for every
 * class (xe-records.c).
 *
 * Exit codes: 0 on success, 1 when the command failed (the reason is on
 * stderr), 2 for a command that is not supported yet. */
#include <config.h>
#include "xe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XE_EXIT_FAIL 1
#define XE_EXIT_UNSUPPORTED 2

/* The Unix socket of a local toolstack.  XenServer's is /var/lib/xcp/xapi;
 * our daemon's is STATE_DIR/xapi.sock, and ./run.sh uses ./state. */
static const char *const default_sockets[] = {
    "/var/lib/xcp/xapi", "/var/lib/xapi-c/xapi.sock", "state/xapi.sock",
};

const char *
xe_arg_get(struct xe_args *args, const char *key)
{
    for (size_t i = 0; i < args->n; i++) {
        if (!strcmp(args->v[i].key, key)) {
            args->v[i].used = true;
            return args->v[i].value;
        }
    }
    return NULL;
}

bool
xe_arg_flag(struct xe_args *args, const char *key)
{
    const char *v = xe_arg_get(args, key);
    return v && (!strcasecmp(v, "true") || !strcasecmp(v, "yes")
                 || !strcmp(v, "1") || !strcasecmp(v, "on"));
}

static void
args_add(struct xe_args *args, const char *key, size_t key_len,
         const char *value)
{
    args->v = xrealloc(args->v, (args->n + 1) * sizeof *args->v);
    args->v[args->n++] = (struct xe_arg) {
        xmemdup0(key, key_len), xstrdup(value), false,
    };
}

static void
args_free(struct xe_args *args)
{
    for (size_t i = 0; i < args->n; i++) {
        free(args->v[i].key);
        free(args->v[i].value);
    }
    free(args->v);
}

static void
config_free(struct xe_config *cfg)
{
    free(cfg->server);
    free(cfg->socket_path);
    free(cfg->username);
    free(cfg->password);
}

static void
set_str(char **dst, const char *value)
{
    free(*dst);
    *dst = xstrdup(value);
}

static int
read_password_file(const char *path, char **ret)
{
    char *data = NULL;
    size_t len;

    if (read_file(path, 4096, &data, &len) < 0) {
        fprintf(stderr, "Error: cannot read password file %s\n", path);
        return -1;
    }
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r')) {
        data[--len] = '\0';
    }
    *ret = data;
    return 0;
}

/* Reads ~/.xe: server=, username=, password=, port=, nossl=, as
 * XenServer's xe does.  Command-line options override it. */
static void
read_rc_file(struct xe_config *cfg)
{
    const char *home = getenv("HOME");
    char *path, *data = NULL, *save = NULL;
    size_t len;

    if (!home) {
        return;
    }
    path = xasprintf("%s/.xe", home);
    if (read_file(path, 65536, &data, &len) == 0) {
        for (char *line = strtok_r(data, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            char *eq = strchr(line, '=');
            if (!eq || line[0] == '#') {
                continue;
            }
            *eq = '\0';
            const char *v = eq + 1;
            if (!strcmp(line, "server")) {
                set_str(&cfg->server, v);
            } else if (!strcmp(line, "username")) {
                set_str(&cfg->username, v);
            } else if (!strcmp(line, "password")) {
                set_str(&cfg->password, v);
            } else if (!strcmp(line, "port")) {
                cfg->port = atoi(v);
            } else if (!strcmp(line, "nossl")) {
                cfg->nossl = !strcmp(v, "true");
            } else if (!strcmp(line, "socket")) {
                set_str(&cfg->socket_path, v);
            }
        }
    }
    free(data);
    free(path);
}

/* The local toolstack's password when none was given: the file ./run.sh
 * writes beside the socket (STATE_DIR/root-password), if readable. */
static void
local_password(struct xe_config *cfg)
{
    char *dir, *slash, *path;

    if (cfg->password || cfg->server) {
        return;
    }
    if (getenv("XE_PASSWORD")) {
        cfg->password = xstrdup(getenv("XE_PASSWORD"));
        return;
    }
    dir = xstrdup(cfg->socket_path);
    slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
    } else {
        strcpy(dir, ".");
    }
    path = xasprintf("%s/root-password", dir);
    if (access(path, R_OK) == 0) {
        read_password_file(path, &cfg->password);
    }
    free(path);
    free(dir);
}

static void
choose_socket(struct xe_config *cfg)
{
    if (cfg->socket_path) {
        return;
    }
    if (getenv("XE_SOCKET")) {
        cfg->socket_path = xstrdup(getenv("XE_SOCKET"));
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(default_sockets); i++) {
        if (access(default_sockets[i], F_OK) == 0) {
            cfg->socket_path = xstrdup(default_sockets[i]);
            return;
        }
    }
    cfg->socket_path = xstrdup(default_sockets[0]);
}

/* ---- help ---- */

static void
usage(void)
{
    printf("Usage: xe [-s SERVER] [-p PORT] [-u USER] [-pw PASSWORD | "
           "-pwf FILE] [--nossl]\n"
           "          COMMAND [key=value ...] [--flag ...]\n\n"
           "Without -s, xe talks to the local toolstack over its Unix socket "
           "(XE_SOCKET, or\n/var/lib/xcp/xapi, or ./state/xapi.sock).  "
           "~/.xe may hold server=, username=,\npassword=, port= and nossl= "
           "lines.\n\n"
           "  xe help [--all] [COMMAND]   lists commands, or explains one\n");
}

static void
print_param_list(const char *label, const char *list)
{
    if (list && *list) {
        printf("  %s params: %s\n", label, list);
    }
}

static void
command_help(const struct xe_cmd *cmd)
{
    printf("command name: %s\n", cmd->name);
    print_param_list("reqd", cmd->reqd);
    print_param_list("optional", cmd->optn);
    printf("\n%s\n", cmd->handler ? cmd->help
                                   : "This command is not supported yet.");
}

static int
help(struct xe_args *args, char **words, size_t n_words)
{
    bool all = false;
    size_t col = 0;

    for (size_t i = 0; i < args->n; i++) {
        if (!strcmp(args->v[i].key, "all")) {
            all = true;
        }
    }
    if (n_words) {
        const struct xe_cmd *cmd = xe_command_find(words[0]);
        const struct xe_class *cls;
        const char *op, *where;
        if (cmd) {
            command_help(cmd);
            return 0;
        }
        if (xe_class_command(words[0], &cls, &op, &where) == 0) {
            xe_class_command_help(cls, op);
            return 0;
        }
        fprintf(stderr, "Unknown command: %s\n", words[0]);
        return XE_EXIT_FAIL;
    }
    usage();
    printf("\n%s commands:\n", all ? "All" : "Common");
    for (size_t i = 0; i < xe_n_commands; i++) {
        const struct xe_cmd *cmd = &xe_commands[i];
        if (!cmd->handler || (!all && (cmd->flags & XE_CMD_HIDDEN))) {
            continue;
        }
        size_t len = strlen(cmd->name) + 2;
        if (col + len > 78) {
            putchar('\n');
            col = 0;
        }
        printf("%s%s", col ? ", " : "    ", cmd->name);
        col += len + (col ? 0 : 2);
    }
    putchar('\n');
    if (all) {
        printf("\nCommands generated for every class (e.g. vm, template, "
               "snapshot, host, sr, vdi,\nvbd, vif, network, pif, pbd, pool, "
               "task, subject, role, message, secret):\n"
               "    <class>-list, <class>-param-list, <class>-param-get, "
               "<class>-param-set,\n    <class>-param-add, "
               "<class>-param-remove, <class>-param-clear\n"
               "\nClasses:");
        col = 80;
        for (size_t i = 0; i < xe_n_classes; i++) {
            if (!xe_classes[i].listable) {
                continue;
            }
            size_t len = strlen(xe_classes[i].xe) + 2;
            if (col + len > 78) {
                printf("\n   ");
                col = 3;
            }
            printf(" %s", xe_classes[i].xe);
            col += len;
        }
        printf("\n\nNot supported yet:");
        col = 80;
        for (size_t i = 0; i < xe_n_commands; i++) {
            if (xe_commands[i].handler) {
                continue;
            }
            size_t len = strlen(xe_commands[i].name) + 1;
            if (col + len > 78) {
                printf("\n   ");
                col = 3;
            }
            printf(" %s", xe_commands[i].name);
            col += len;
        }
        putchar('\n');
    } else {
        printf("\nThe commands generated for every class (<class>-list, "
               "-param-list, -param-get,\n-param-set, -param-add, "
               "-param-remove, -param-clear) and the rest: xe help --all\n");
    }
    return 0;
}

/* Lists every command name, for bash completion. */
static void
list_commands(void)
{
    static const char *const ops[] = {
        "list", "param-list", "param-get", "param-set", "param-add",
        "param-remove", "param-clear",
    };
    for (size_t i = 0; i < xe_n_commands; i++) {
        if (xe_commands[i].handler) {
            printf("%s\n", xe_commands[i].name);
        }
    }
    for (size_t i = 0; i < xe_n_classes; i++) {
        if (!xe_classes[i].listable) {
            continue;
        }
        for (size_t j = 0; j < ARRAY_SIZE(ops); j++) {
            printf("%s-%s\n", xe_classes[i].xe, ops[j]);
        }
        if (!strcmp(xe_classes[i].api, "VM")) {
            for (size_t j = 0; j < ARRAY_SIZE(ops); j++) {
                printf("template-%s\nsnapshot-%s\n", ops[j], ops[j]);
            }
        }
    }
}

/* ---- main ---- */

static int
check_required(const struct xe_cmd *cmd, struct xe_args *args)
{
    char *copy, *save = NULL;
    int rc = 0;

    if (!cmd->reqd || !*cmd->reqd) {
        return 0;
    }
    copy = xstrdup(cmd->reqd);
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (size_t i = 0; i < args->n; i++) {
            if (!strcmp(args->v[i].key, p)) {
                found = true;
            }
        }
        if (!found) {
            fprintf(stderr, "Error: missing parameter: %s\n", p);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

/* Rejects arguments no part of the command takes: a typo such as
 * new-name=foo must not pass silently.  Commands with selectors also take
 * field filters, which the selection checks itself. */
static int
check_unknown(const struct xe_cmd *cmd, struct xe_args *args)
{
    int rc = 0;

    if (cmd->flags & (XE_CMD_VM_SEL | XE_CMD_HOST_SEL | XE_CMD_SR_SEL
                      | XE_CMD_FIELDS)) {
        return 0;
    }
    for (size_t i = 0; i < args->n; i++) {
        if (!args->v[i].used && !xe_is_command_param(cmd, args->v[i].key)) {
            fprintf(stderr, "Error: unknown parameter: %s\n", args->v[i].key);
            rc = -1;
        }
    }
    return rc;
}

/* Class commands consume what they understand; anything left is a typo. */
static int
check_unused(struct xe_args *args)
{
    int rc = 0;

    for (size_t i = 0; i < args->n; i++) {
        if (!args->v[i].used) {
            fprintf(stderr, "Error: unknown parameter: %s\n", args->v[i].key);
            rc = -1;
        }
    }
    return rc;
}

int
main(int argc, char **argv)
{
    struct xe_config cfg = { 0 };
    struct xe_args args = { 0 };
    struct xe_conn *conn = NULL;
    struct xe_cmd_ctx ctx = { 0 };
    const struct xe_cmd *cmd = NULL;
    const struct xe_class *cls = NULL;
    const char *op = NULL, *where = NULL, *name = NULL;
    char **words = NULL;
    size_t n_words = 0;
    char *pwfile = NULL;
    int rc = XE_EXIT_FAIL;

    read_rc_file(&cfg);
    words = xcalloc((size_t)argc, sizeof *words);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *opt_value = i + 1 < argc ? argv[i + 1] : NULL;
        const char *eq = strchr(a, '=');

        if (!strcmp(a, "-s") || !strcmp(a, "-p") || !strcmp(a, "-u")
            || !strcmp(a, "-pw") || !strcmp(a, "-pwf") || !strcmp(a, "-h")) {
            if (!opt_value) {
                fprintf(stderr, "Error: %s needs a value\n", a);
                goto out;
            }
            i++;
            if (!strcmp(a, "-s") || !strcmp(a, "-h")) {
                set_str(&cfg.server, opt_value);
            } else if (!strcmp(a, "-p")) {
                cfg.port = atoi(opt_value);
            } else if (!strcmp(a, "-u")) {
                set_str(&cfg.username, opt_value);
            } else if (!strcmp(a, "-pw")) {
                set_str(&cfg.password, opt_value);
            } else {
                set_str(&pwfile, opt_value);
            }
        } else if (!strcmp(a, "--nossl")) {
            cfg.nossl = true;
        } else if (!strcmp(a, "--debug")) {
            cfg.debug = true;
        } else if (!strcmp(a, "--list-commands")) {
            list_commands();
            rc = 0;
            goto out;
        } else if (a[0] == '-' && !eq) {
            const char *flag = a + (a[1] == '-' ? 2 : 1);
            args_add(&args, flag, strlen(flag), "true");
        } else if (eq && !name) {
            /* key=value before the command name: XenServer accepts
             * server=, port=, username=, password= there. */
            args_add(&args, a, (size_t)(eq - a), eq + 1);
        } else if (eq) {
            args_add(&args, a, (size_t)(eq - a), eq + 1);
        } else if (!name) {
            name = a;
        } else {
            words[n_words++] = argv[i];
        }
    }
    /* Connection settings may also come as key=value arguments. */
    for (size_t i = 0; i < args.n; i++) {
        struct xe_arg *a = &args.v[i];
        if (!strcmp(a->key, "server")) {
            set_str(&cfg.server, a->value);
        } else if (!strcmp(a->key, "port")) {
            cfg.port = atoi(a->value);
        } else if (!strcmp(a->key, "username")) {
            set_str(&cfg.username, a->value);
        } else if (!strcmp(a->key, "password")) {
            set_str(&cfg.password, a->value);
        } else if (!strcmp(a->key, "passwordfile")) {
            set_str(&pwfile, a->value);
        } else if (!strcmp(a->key, "nossl")) {
            cfg.nossl = !strcmp(a->value, "true");
        } else if (!strcmp(a->key, "debug")) {
            cfg.debug = true;
        } else {
            continue;
        }
        a->used = true;
    }
    if (pwfile && read_password_file(pwfile, &cfg.password) < 0) {
        goto out;
    }
    if (!name || !strcmp(name, "help") || !strcmp(name, "--help")) {
        if (!name && args.n == 0) {
            usage();
            rc = 0;
            goto out;
        }
        rc = help(&args, words, n_words);
        goto out;
    }
    if (!cfg.port) {
        cfg.port = cfg.nossl ? 80 : 443;
    }
    choose_socket(&cfg);
    local_password(&cfg);

    cmd = xe_command_find(name);
    if (!cmd && xe_class_command(name, &cls, &op, &where) < 0) {
        fprintf(stderr, "Unknown command: %s\nFor a list of commands: "
                "xe help --all\n", name);
        goto out;
    }
    if (cmd && !cmd->handler) {
        fprintf(stderr, "Error: the command %s is not supported yet by this "
                "xe\n", name);
        rc = XE_EXIT_UNSUPPORTED;
        goto out;
    }
    if (n_words) {
        fprintf(stderr, "Error: unexpected argument '%s' (parameters are "
                "key=value)\n", words[0]);
        goto out;
    }
    if (cmd && (check_required(cmd, &args) < 0
                || check_unknown(cmd, &args) < 0)) {
        goto out;
    }
    if (xe_connect(&cfg, &conn) < 0) {
        goto out;
    }
    args.cmd = cmd;
    ctx.conn = conn;
    ctx.args = &args;
    ctx.cmd = cmd;
    ctx.cls = cls;
    ctx.where = where;
    ctx.minimal = xe_arg_flag(&args, "minimal");
    if (cmd ? cmd->handler(&ctx) : xe_run_class_command(&ctx, op)) {
        goto out;
    }
    if (!cmd && check_unused(&args) < 0) {
        goto out;
    }
    rc = 0;
out:
    fflush(stdout);
    xe_disconnect(conn);
    args_free(&args);
    config_free(&cfg);
    free(pwfile);
    free(words);
    return rc;
}
