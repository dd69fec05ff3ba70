/* types.h — conversion between decoded wire values and the canonical
 * values of datamodel types.
 *
 * The codecs know only XML-RPC and JSON types; the datamodel says what a
 * parameter or field must be.  api_coerce() checks a decoded value against
 * a type and produces the canonical form the database and handlers use:
 * ints as VALUE_INT whether they arrived as "123", <i4> or a JSON number;
 * enums spelled as the datamodel spells them; datetimes in XenAPI's form. */
#ifndef TYPES_H
#define TYPES_H 1

#include "schema.h"
#include "value.h"

/* Returns 0 and a new reference in *ret_out, or -EINVAL. */
int api_coerce(const struct api_type *t, struct value *in,
               struct value **ret_out);

/* The value of a datamodel default such as "{}", "OpaqueRef:NULL", "-1."
 * or {"active" -> "false"}.  Returns NULL if the text does not parse. */
struct value *api_parse_default(const struct api_type *t, const char *text);

/* The value a field gets when the datamodel gives no default. */
struct value *api_zero_value(const struct api_type *t);

#endif
