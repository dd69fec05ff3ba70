/* query.h — XenAPI's query expressions for get_all_records_where, e.g.
 *
 *     field "power_state" = "Running" and not (field "is_a_template" = "true")
 *
 * Grammar (keywords case-sensitive, as XenAPI's):
 *     expr    := or
 *     or      := and { "or" and }
 *     and     := unary { "and" unary }
 *     unary   := "not" unary | "(" expr ")" | "true" | "false" | cmp
 *     cmp     := operand ("=" | "<>" | "!=") operand
 *     operand := "field" STRING | STRING
 *     STRING  := '"' chars '"'   with \" and \\ escapes
 *
 * Comparison is on the database's string form of a field (see
 * db_field_to_query_string in db.h): ints in decimal, bools as "true" /
 * "false", enums as on the wire, refs as "OpaqueRef:...".  Parsing is
 * bounded (input length and nesting depth). */
#ifndef QUERY_H
#define QUERY_H 1

#include <stdbool.h>

#include "util.h"

struct query;

/* Returns 0 or -EINVAL with a message in *ret_err. */
int query_parse(const char *text, struct query **ret_query, char **ret_err);

/* get_field appends the string form of the named field of the row being
 * tested to out and returns true, or returns false if the row's class has
 * no such field.  query_eval returns 1 if the row matches, 0 if not, and
 * -ENOENT if the expression names a field the class lacks (the name is
 * then returned in *ret_field, borrowed from the query). */
int query_eval(const struct query *q,
               bool (*get_field)(void *aux, const char *name, struct ds *out),
               void *aux, const char **ret_field);

void query_free(struct query *q);   /* accepts NULL */

#endif
