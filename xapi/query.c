/* query.c — parser and evaluator for XenAPI's query expressions, as
 * query.h describes.
 *
 * The text is split into tokens, parsed by recursive descent into a small
 * tree, and the tree is evaluated once per row by the get_all_records_where
 * handlers, which supply each field's string form through a callback.
 * "and" and "or" chains become one node with many children, so the tree is
 * only as deep as the text's nesting, which the parser bounds; evaluation
 * and freeing can then recurse without risk to the stack. */
#include <config.h>
#include "query.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Queries arrive from API clients; these bounds keep a hostile one from
 * costing more than a little memory and stack. */
#define QUERY_MAX_LEN (64 * 1024)
#define QUERY_MAX_DEPTH 64

enum token_type {
    TOK_END,
    TOK_STRING,
    TOK_LPAREN,
    TOK_RPAREN,
    TOK_EQ,         /* = */
    TOK_NE,         /* <> or != */
    TOK_FIELD,
    TOK_AND,
    TOK_OR,
    TOK_NOT,
    TOK_TRUE,
    TOK_FALSE,
    TOK_WORD,       /* any other word; the parser reports it in context */
};

struct token {
    enum token_type type;
    size_t offset;          /* where the token starts in the text */
    size_t len;             /* its length in the text, quotes included */
    char *value;            /* TOK_STRING: the unescaped contents */
    size_t value_len;
};

struct operand {
    bool is_field;          /* field "name", else a literal */
    char *s;                /* field name or literal, unescaped */
    size_t len;
};

enum node_type {
    NODE_TRUE,
    NODE_FALSE,
    NODE_NOT,
    NODE_AND,
    NODE_OR,
    NODE_EQ,
    NODE_NE,
};

struct query_node {
    enum node_type type;
    struct query_node **children;   /* NOT: one; AND, OR: two or more */
    size_t n_children;
    struct operand lhs, rhs;        /* EQ, NE */
};

struct query {
    struct query_node *root;
};

struct parser {
    const char *text;
    size_t pos;             /* scanning position for the next token */
    struct token tok;       /* the current (lookahead) token */
    int depth;
    char *err;              /* first error, if any */
};

static void node_free(struct query_node *node);

static void PRINTF_FMT(2, 3)
parser_error(struct parser *p, const char *fmt, ...)
{
    struct ds msg = DS_EMPTY;
    va_list ap;

    /* Keep the first message: later ones are consequences of it. */
    if (p->err) {
        return;
    }
    va_start(ap, fmt);
    ds_put_vfmt(&msg, fmt, ap);
    va_end(ap);
    p->err = ds_steal(&msg);
}

/* Describes a token for an error message: its text in quotes, cut short
 * if long, or "the end of the query". */
static char *
token_describe(const struct parser *p, const struct token *t)
{
    enum { SHOWN = 20 };

    if (t->type == TOK_END) {
        return xstrdup("the end of the query");
    }
    if (t->len > SHOWN) {
        return xasprintf("'%.*s...'", SHOWN, p->text + t->offset);
    }
    return xasprintf("'%.*s'", (int) t->len, p->text + t->offset);
}

static bool
is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_';
}

/* Scans a string literal whose opening quote is at p->pos. */
static int
scan_string(struct parser *p, struct token *t)
{
    const char *text = p->text;
    size_t start = p->pos;
    size_t i = start + 1;
    struct ds value = DS_EMPTY;
    int rc;

    for (;;) {
        char c = text[i];

        if (c == '\0') {
            parser_error(p, "unterminated string starting at offset %zu",
                         start);
            rc = -EINVAL;
            goto out;
        } else if (c == '"') {
            i++;
            break;
        } else if (c == '\\') {
            char next = text[i + 1];

            if (next != '"' && next != '\\') {
                if (next == '\0') {
                    parser_error(p, "unterminated string starting at "
                                 "offset %zu", start);
                } else {
                    parser_error(p, "unknown escape '\\%c' at offset %zu "
                                 "(only \\\" and \\\\ are allowed)",
                                 next, i);
                }
                rc = -EINVAL;
                goto out;
            }
            ds_put_char(&value, next);
            i += 2;
        } else {
            ds_put_char(&value, c);
            i++;
        }
    }
    t->type = TOK_STRING;
    t->offset = start;
    t->len = i - start;
    t->value_len = value.len;
    t->value = ds_steal(&value);
    p->pos = i;
    rc = 0;
out:
    ds_destroy(&value);
    return rc;
}

/* Moves to the next token, replacing p->tok.  On error p->tok is TOK_END
 * and p->err says why. */
static int
next_token(struct parser *p)
{
    static const struct {
        const char *word;
        enum token_type type;
    } keywords[] = {
        { "field", TOK_FIELD },
        { "and", TOK_AND },
        { "or", TOK_OR },
        { "not", TOK_NOT },
        { "true", TOK_TRUE },
        { "false", TOK_FALSE },
    };
    const char *text = p->text;
    struct token t = { .type = TOK_END };
    size_t start;

    free(p->tok.value);
    p->tok = t;

    while (text[p->pos] == ' ' || text[p->pos] == '\t'
           || text[p->pos] == '\n' || text[p->pos] == '\r') {
        p->pos++;
    }
    start = p->pos;
    t.offset = start;

    switch (text[start]) {
    case '\0':
        p->tok = t;
        return 0;
    case '"':
        if (scan_string(p, &t)) {
            return -EINVAL;
        }
        p->tok = t;
        return 0;
    case '(':
        t.type = TOK_LPAREN;
        t.len = 1;
        break;
    case ')':
        t.type = TOK_RPAREN;
        t.len = 1;
        break;
    case '=':
        t.type = TOK_EQ;
        t.len = 1;
        break;
    case '<':
        if (text[start + 1] != '>') {
            parser_error(p, "unexpected '<' at offset %zu (did you mean "
                         "'<>'?)", start);
            return -EINVAL;
        }
        t.type = TOK_NE;
        t.len = 2;
        break;
    case '!':
        if (text[start + 1] != '=') {
            parser_error(p, "unexpected '!' at offset %zu (did you mean "
                         "'!='?)", start);
            return -EINVAL;
        }
        t.type = TOK_NE;
        t.len = 2;
        break;
    default:
        if (is_word_char(text[start])) {
            size_t end = start;

            while (is_word_char(text[end])) {
                end++;
            }
            t.len = end - start;
            for (size_t i = 0; i < ARRAY_SIZE(keywords); i++) {
                if (strlen(keywords[i].word) == t.len
                    && !memcmp(keywords[i].word, text + start, t.len)) {
                    t.type = keywords[i].type;
                    p->pos = end;
                    p->tok = t;
                    return 0;
                }
            }
            t.type = TOK_WORD;
            break;
        }
        if ((unsigned char) text[start] < 0x20
            || (unsigned char) text[start] >= 0x7f) {
            parser_error(p, "unexpected byte 0x%02x at offset %zu",
                         (unsigned char) text[start], start);
        } else {
            parser_error(p, "unexpected character '%c' at offset %zu",
                         text[start], start);
        }
        return -EINVAL;
    }
    p->pos = start + t.len;
    p->tok = t;
    return 0;
}

static struct query_node *
node_new(enum node_type type)
{
    struct query_node *node = xcalloc(1, sizeof *node);

    node->type = type;
    return node;
}

static void
node_add_child(struct query_node *node, struct query_node *child)
{
    node->children = xrealloc(node->children,
                              (node->n_children + 1) * sizeof *node->children);
    node->children[node->n_children++] = child;
}

/* operand := "field" STRING | STRING */
static int
parse_operand(struct parser *p, const char *where, struct operand *ret_op)
{
    struct operand op = { .is_field = false };
    char *found;

    if (p->tok.type == TOK_FIELD) {
        if (next_token(p)) {
            return -EINVAL;
        }
        if (p->tok.type != TOK_STRING) {
            found = token_describe(p, &p->tok);
            parser_error(p, "expected a string after 'field' at offset %zu, "
                         "found %s", p->tok.offset, found);
            free(found);
            return -EINVAL;
        }
        op.is_field = true;
    } else if (p->tok.type != TOK_STRING) {
        found = token_describe(p, &p->tok);
        parser_error(p, "expected 'field \"name\"' or a string %s at offset "
                     "%zu, found %s", where, p->tok.offset, found);
        free(found);
        return -EINVAL;
    }
    op.s = p->tok.value;
    op.len = p->tok.value_len;
    p->tok.value = NULL;
    if (next_token(p)) {
        free(op.s);
        return -EINVAL;
    }
    *ret_op = op;
    return 0;
}

/* cmp := operand ("=" | "<>" | "!=") operand */
static int
parse_comparison(struct parser *p, struct query_node **ret_node)
{
    struct query_node *node = NULL;
    char *found = NULL;
    int rc;

    node = node_new(NODE_EQ);
    rc = parse_operand(p, "to start a comparison", &node->lhs);
    if (rc) {
        goto out;
    }
    if (p->tok.type != TOK_EQ && p->tok.type != TOK_NE) {
        found = token_describe(p, &p->tok);
        parser_error(p, "expected '=', '<>' or '!=' at offset %zu, found %s",
                     p->tok.offset, found);
        rc = -EINVAL;
        goto out;
    }
    node->type = p->tok.type == TOK_EQ ? NODE_EQ : NODE_NE;
    rc = next_token(p);
    if (rc) {
        goto out;
    }
    rc = parse_operand(p, "after the operator", &node->rhs);
    if (rc) {
        goto out;
    }
    *ret_node = node;
    node = NULL;
out:
    node_free(node);
    free(found);
    return rc;
}

static int parse_or(struct parser *p, struct query_node **ret_node);

/* Counts one level of nesting ("not" or "(") and refuses to go deeper
 * than QUERY_MAX_DEPTH, so that recursion here, in evaluation and in
 * freeing stays shallow whatever the input. */
static int
enter_nesting(struct parser *p)
{
    if (++p->depth > QUERY_MAX_DEPTH) {
        parser_error(p, "query nested too deeply (more than %d levels of "
                     "'not' and parentheses) at offset %zu",
                     QUERY_MAX_DEPTH, p->tok.offset);
        return -EINVAL;
    }
    return 0;
}

/* unary := "not" unary | "(" expr ")" | "true" | "false" | cmp */
static int
parse_unary(struct parser *p, struct query_node **ret_node)
{
    struct query_node *node = NULL, *child = NULL;
    char *found = NULL;
    size_t open_offset;
    int rc;

    switch (p->tok.type) {
    case TOK_NOT:
        rc = enter_nesting(p);
        if (rc) {
            goto out;
        }
        rc = next_token(p);
        if (rc) {
            goto out;
        }
        rc = parse_unary(p, &child);
        if (rc) {
            goto out;
        }
        p->depth--;
        node = node_new(NODE_NOT);
        node_add_child(node, child);
        child = NULL;
        break;
    case TOK_LPAREN:
        open_offset = p->tok.offset;
        rc = enter_nesting(p);
        if (rc) {
            goto out;
        }
        rc = next_token(p);
        if (rc) {
            goto out;
        }
        rc = parse_or(p, &node);
        if (rc) {
            goto out;
        }
        if (p->tok.type != TOK_RPAREN) {
            found = token_describe(p, &p->tok);
            parser_error(p, "expected ')' to close the '(' at offset %zu, "
                         "found %s at offset %zu", open_offset, found,
                         p->tok.offset);
            rc = -EINVAL;
            goto out;
        }
        p->depth--;
        rc = next_token(p);
        if (rc) {
            goto out;
        }
        break;
    case TOK_TRUE:
    case TOK_FALSE:
        node = node_new(p->tok.type == TOK_TRUE ? NODE_TRUE : NODE_FALSE);
        rc = next_token(p);
        if (rc) {
            goto out;
        }
        break;
    case TOK_FIELD:
    case TOK_STRING:
        rc = parse_comparison(p, &node);
        if (rc) {
            goto out;
        }
        break;
    default:
        found = token_describe(p, &p->tok);
        parser_error(p, "expected a condition (field \"name\" = \"value\", "
                     "not, '(', true or false) at offset %zu, found %s",
                     p->tok.offset, found);
        rc = -EINVAL;
        goto out;
    }
    *ret_node = node;
    node = NULL;
    rc = 0;
out:
    node_free(node);
    node_free(child);
    free(found);
    return rc;
}

/* Parses "sub { op sub }" into one node of the given type with all the
 * operands as children, or just the single operand when there is no op. */
static int
parse_chain(struct parser *p, enum token_type op, enum node_type type,
            int (*parse_sub)(struct parser *, struct query_node **),
            struct query_node **ret_node)
{
    struct query_node *first = NULL, *chain = NULL, *next = NULL;
    int rc;

    rc = parse_sub(p, &first);
    if (rc) {
        goto out;
    }
    while (p->tok.type == op) {
        rc = next_token(p);
        if (rc) {
            goto out;
        }
        rc = parse_sub(p, &next);
        if (rc) {
            goto out;
        }
        if (!chain) {
            chain = node_new(type);
            node_add_child(chain, first);
            first = NULL;
        }
        node_add_child(chain, next);
        next = NULL;
    }
    *ret_node = chain ? chain : first;
    chain = first = NULL;
out:
    node_free(first);
    node_free(chain);
    node_free(next);
    return rc;
}

static int
parse_and(struct parser *p, struct query_node **ret_node)
{
    return parse_chain(p, TOK_AND, NODE_AND, parse_unary, ret_node);
}

/* or := and { "or" and } — "and" binds tighter, as in xapi. */
static int
parse_or(struct parser *p, struct query_node **ret_node)
{
    return parse_chain(p, TOK_OR, NODE_OR, parse_and, ret_node);
}

int
query_parse(const char *text, struct query **ret_query, char **ret_err)
{
    struct parser p = { .text = text };
    struct query_node *root = NULL;
    struct query *q;
    char *found = NULL;
    size_t len;
    int rc;

    len = strnlen(text, QUERY_MAX_LEN + 1);
    if (len > QUERY_MAX_LEN) {
        parser_error(&p, "query is longer than %d bytes", QUERY_MAX_LEN);
        rc = -EINVAL;
        goto out;
    }
    rc = next_token(&p);
    if (rc) {
        goto out;
    }
    if (p.tok.type == TOK_END) {
        parser_error(&p, "empty query (to match every row, use 'true')");
        rc = -EINVAL;
        goto out;
    }
    rc = parse_or(&p, &root);
    if (rc) {
        goto out;
    }
    if (p.tok.type != TOK_END) {
        found = token_describe(&p, &p.tok);
        parser_error(&p, "unexpected %s at offset %zu after a complete "
                     "condition (missing 'and' or 'or'?)", found,
                     p.tok.offset);
        rc = -EINVAL;
        goto out;
    }
    q = xmalloc(sizeof *q);
    q->root = root;
    root = NULL;
    *ret_query = q;
    rc = 0;
out:
    if (rc) {
        *ret_err = p.err ? p.err : xstrdup("invalid query");
    } else {
        free(p.err);
    }
    free(p.tok.value);
    free(found);
    node_free(root);
    return rc;
}

/* ---- evaluation ---- */

/* Scratch buffers for the two sides of a comparison, reused across the
 * whole tree so a row costs no allocation once they have grown. */
struct eval_ctx {
    bool (*get_field)(void *aux, const char *name, struct ds *out);
    void *aux;
    struct ds lhs, rhs;
    const char *missing_field;
};

/* Points *ret_s and *ret_len at the operand's value for this row. */
static int
operand_value(struct eval_ctx *ctx, const struct operand *op,
              struct ds *scratch, const char **ret_s, size_t *ret_len)
{
    if (!op->is_field) {
        *ret_s = op->s;
        *ret_len = op->len;
        return 0;
    }
    ds_clear(scratch);
    if (!ctx->get_field(ctx->aux, op->s, scratch)) {
        if (!ctx->missing_field) {
            ctx->missing_field = op->s;
        }
        return -ENOENT;
    }
    *ret_s = scratch->s ? scratch->s : "";
    *ret_len = scratch->len;
    return 0;
}

/* Returns 1 or 0.  A missing field is recorded in ctx and makes the whole
 * query fail, so "and"/"or" evaluate every child rather than stopping
 * early: whether a query naming a bad field is rejected must not depend
 * on the values in the row. */
static int
eval_node(struct eval_ctx *ctx, const struct query_node *node)
{
    const char *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    int result;
    bool equal;

    switch (node->type) {
    case NODE_TRUE:
        return 1;
    case NODE_FALSE:
        return 0;
    case NODE_NOT:
        return !eval_node(ctx, node->children[0]);
    case NODE_AND:
        result = 1;
        for (size_t i = 0; i < node->n_children; i++) {
            result &= eval_node(ctx, node->children[i]);
        }
        return result;
    case NODE_OR:
        result = 0;
        for (size_t i = 0; i < node->n_children; i++) {
            result |= eval_node(ctx, node->children[i]);
        }
        return result;
    case NODE_EQ:
    case NODE_NE:
        if (operand_value(ctx, &node->lhs, &ctx->lhs, &a, &a_len)
            || operand_value(ctx, &node->rhs, &ctx->rhs, &b, &b_len)) {
            return 0;
        }
        /* Exact byte comparison of the string forms: XenAPI compares
         * strings, so "1" and "01" differ. */
        equal = a_len == b_len && !memcmp(a, b, a_len);
        return node->type == NODE_EQ ? equal : !equal;
    }
    xabort("query: unknown node type %d", (int) node->type);
}

int
query_eval(const struct query *q,
           bool (*get_field)(void *aux, const char *name, struct ds *out),
           void *aux, const char **ret_field)
{
    struct eval_ctx ctx = {
        .get_field = get_field,
        .aux = aux,
        .lhs = DS_EMPTY,
        .rhs = DS_EMPTY,
    };
    int rc;

    rc = eval_node(&ctx, q->root);
    if (ctx.missing_field) {
        if (ret_field) {
            *ret_field = ctx.missing_field;
        }
        rc = -ENOENT;
    }
    ds_destroy(&ctx.lhs);
    ds_destroy(&ctx.rhs);
    return rc;
}

static void
operand_destroy(struct operand *op)
{
    free(op->s);
}

static void
node_free(struct query_node *node)
{
    if (!node) {
        return;
    }
    for (size_t i = 0; i < node->n_children; i++) {
        node_free(node->children[i]);
    }
    free(node->children);
    operand_destroy(&node->lhs);
    operand_destroy(&node->rhs);
    free(node);
}

void
query_free(struct query *q)
{
    if (!q) {
        return;
    }
    node_free(q->root);
    free(q);
}
