/* codec.h — XML-RPC and JSON encoders and decoders for struct value.
 *
 * The decoders parse untrusted network input: every one is bounded by a
 * struct codec_limits (total size, nesting depth, string length, number of
 * items) and answers malformed or hostile input with -EINVAL (or -E2BIG
 * when a limit is exceeded) and a short message in *ret_err, never a crash
 * and never unbounded memory.  Outputs (ret_*) are written only on
 * success; *ret_err, when given, is set (malloc'd) only on failure.
 *
 * XenAPI conventions (see the wire protocol in the reference):
 *   - XML-RPC: VALUE_INT is written as a string of decimal digits
 *     (<value>123</value>); <i4>, <int> and <i8> are accepted on input and
 *     decode to VALUE_INT; a <value> with no type element is a string;
 *     <dateTime.iso8601> decodes to VALUE_DATETIME; <nil/> to VALUE_NIL;
 *     <base64> decodes to the (decoded) string; structs to VALUE_STRUCT;
 *     strings are written as <value>text</value> without a <string> tag,
 *     as XenAPI does.  Doubles are written as <double>, with enough digits
 *     to round-trip.
 *   - JSON: integers without fraction or exponent decode to VALUE_INT
 *     (64-bit; out-of-range integers decode to VALUE_DOUBLE), other
 *     numbers to VALUE_DOUBLE, null to VALUE_NIL; VALUE_DATETIME is written
 *     as a string; VALUE_INT as a number.  \u escapes, including surrogate
 *     pairs, decode to UTF-8; invalid escapes are errors.  Duplicate object
 *     keys: the last wins. */
#ifndef CODEC_H
#define CODEC_H 1

#include "util.h"
#include "value.h"

struct codec_limits {
    size_t max_input;       /* bytes of input; larger input is -E2BIG */
    size_t max_depth;       /* nesting of arrays/structs */
    size_t max_string;      /* bytes in one decoded string or name */
    size_t max_items;       /* total values decoded (bounds memory) */
};

/* Limits used for requests from clients: 64 MiB, depth 64, 16 MiB strings,
 * 4 million values. */
extern const struct codec_limits codec_default_limits;

/* ---- XML-RPC ---- */

/* Parses a <methodCall>.  *ret_params is a VALUE_ARRAY. */
int xmlrpc_parse_call(const char *buf, size_t len,
                      const struct codec_limits *lim, char **ret_method,
                      struct value **ret_params, char **ret_err);

/* Parses a <methodResponse> holding one <param> (as sent by XenAPI: a
 * struct with Status/Value or Status/ErrorDescription), or a <fault>.  For
 * a fault, *ret_value is a struct {faultCode, faultString} and *ret_fault
 * is true. */
int xmlrpc_parse_response(const char *buf, size_t len,
                          const struct codec_limits *lim,
                          struct value **ret_value, bool *ret_fault,
                          char **ret_err);

/* Writes <value>...</value> for v. */
void xmlrpc_write_value(struct ds *out, const struct value *v);
/* Writes a complete <methodCall>. params is a VALUE_ARRAY. */
void xmlrpc_write_call(struct ds *out, const char *method,
                       const struct value *params);
/* Writes a complete <methodResponse> whose single param is
 * {Status: Success, Value: v}. */
void xmlrpc_write_success(struct ds *out, const struct value *v);
/* Writes a complete <methodResponse> whose single param is
 * {Status: Failure, ErrorDescription: [code, params...]}.  error is a
 * VALUE_ARRAY of strings. */
void xmlrpc_write_failure(struct ds *out, const struct value *error);
/* Writes a complete <methodResponse> with one param holding v as is
 * (used for system.* introspection calls, which have no envelope). */
void xmlrpc_write_plain(struct ds *out, const struct value *v);

/* ---- JSON ---- */

int json_parse(const char *buf, size_t len, const struct codec_limits *lim,
               struct value **ret_value, char **ret_err);
void json_write(struct ds *out, const struct value *v);

#endif
