/* test-codec.c — unit tests for the XML-RPC and JSON codecs (lib/xmlrpc.c,
 * lib/json.c): round trips of every value type, the XenAPI envelopes, the
 * input forms other clients send, and the limits and error paths that
 * protect the server from hostile input.  The fuzz targets in tests/fuzz
 * explore the same decoders with generated input. */
#include <config.h>
#define TEST_MAIN
#include "tests/unit/test.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>

#include "codec.h"

/* ---- helpers ---- */

/* A value holding one of each type, nested, as a XenAPI record might. */
static struct value *
make_sample(void)
{
    struct value *st = value_struct(0);
    struct value *arr = value_array(0);
    struct value *inner = value_struct(0);

    value_array_append(arr, value_string("CX8"));
    value_array_append(arr, value_int(-42));
    value_array_append(arr, value_bool(true));
    value_array_append(arr, value_empty_array());
    value_struct_put(inner, "key with <&> chars", value_string("v\"'\r\n\t"));
    value_struct_put(inner, "empty", value_empty_struct());
    value_struct_put(st, "uuid",
                     value_string("81547a35-205c-a551-c577-00b982c5fe00"));
    value_struct_put(st, "name_label",
                     value_string("caf\xc3\xa9 \xf0\x9f\x98\x80"));
    value_struct_put(st, "memory", value_int(INT64_MAX));
    value_struct_put(st, "min", value_int(INT64_MIN));
    value_struct_put(st, "ratio", value_double(0.1));
    value_struct_put(st, "big", value_double(1.5e300));
    value_struct_put(st, "neg", value_double(-2.0));
    value_struct_put(st, "is_a_template", value_bool(false));
    value_struct_put(st, "created", value_datetime("20240131T23:59:59Z"));
    value_struct_put(st, "list", arr);
    value_struct_put(st, "map", inner);
    value_struct_put(st, "empty", value_empty_string());
    return st;
}

/* What an XML-RPC round trip makes of v: ints become their decimal text
 * (XenAPI sends them as strings) and nil an empty string. */
static struct value *
xml_normalise(const struct value *v)
{
    struct value *c;

    switch (v->type) {
    case VALUE_INT:
        return value_stringf("%lld", (long long) v->u.i);
    case VALUE_NIL:
        return value_empty_string();
    case VALUE_ARRAY:
        c = value_array(v->u.arr.n);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            value_array_append(c, xml_normalise(v->u.arr.items[i]));
        }
        return c;
    case VALUE_STRUCT:
        c = value_struct(v->u.st.n);
        for (size_t i = 0; i < v->u.st.n; i++) {
            value_struct_put(c, v->u.st.m[i].name,
                             xml_normalise(v->u.st.m[i].v));
        }
        return c;
    default:
        return value_clone(v);
    }
}

static bool
values_match(const struct value *a, const struct value *b)
{
    if (!value_equal(a, b)) {
        char *ta = value_to_text(a), *tb = value_to_text(b);
        fprintf(stderr, "  values differ:\n    %s\n    %s\n", ta, tb);
        free(ta);
        free(tb);
        return false;
    }
    return true;
}

/* Parses one XML-RPC <value> by wrapping it in a call.  Returns the error
 * code; on success *ret_v holds the value, on failure *ret_err (if
 * requested) the message. */
static int
parse_xml_value(const char *value_xml, struct value **ret_v, char **ret_err)
{
    struct value *params = NULL;
    char *method = NULL, *err = NULL, *doc;
    int rc;

    doc = xasprintf("<?xml version=\"1.0\"?><methodCall><methodName>m"
                    "</methodName><params><param>%s</param></params>"
                    "</methodCall>", value_xml);
    rc = xmlrpc_parse_call(doc, strlen(doc), &codec_default_limits, &method,
                           &params, &err);
    if (!rc) {
        if (params->u.arr.n == 1) {
            *ret_v = value_ref(params->u.arr.items[0]);
        } else {
            rc = -999;
        }
    }
    if (ret_err) {
        *ret_err = err;
    } else {
        free(err);
    }
    free(method);
    value_unref(params);
    free(doc);
    return rc;
}

/* Expects value_xml to fail with rc and a non-empty message. */
static bool
xml_value_fails(const char *value_xml, int expected_rc)
{
    struct value *v = NULL;
    char *err = NULL;
    int rc = parse_xml_value(value_xml, &v, &err);
    bool ok = rc == expected_rc && err && *err && !v;

    if (!ok) {
        fprintf(stderr, "  %s: rc %d (expected %d), err %s\n", value_xml, rc,
                expected_rc, err ? err : "(none)");
    }
    value_unref(v);
    free(err);
    return ok;
}

static bool
xml_call_fails(const char *doc, const struct codec_limits *lim,
               int expected_rc)
{
    struct value *params = NULL;
    char *method = NULL, *err = NULL;
    int rc = xmlrpc_parse_call(doc, strlen(doc), lim, &method, &params,
                               &err);
    bool ok = rc == expected_rc && err && *err && !method && !params;

    if (!ok) {
        fprintf(stderr, "  %.60s: rc %d (expected %d), err %s\n", doc, rc,
                expected_rc, err ? err : "(none)");
    }
    free(method);
    value_unref(params);
    free(err);
    return ok;
}

static struct value *
json_ok(const char *text)
{
    struct value *v = NULL;
    char *err = NULL;
    int rc = json_parse(text, strlen(text), &codec_default_limits, &v, &err);

    if (rc) {
        fprintf(stderr, "  %s: unexpected error %d: %s\n", text, rc, err);
    }
    free(err);
    return v;
}

static bool
json_fails_lim(const char *text, size_t len, const struct codec_limits *lim,
               int expected_rc)
{
    struct value *v = NULL;
    char *err = NULL;
    int rc = json_parse(text, len, lim, &v, &err);
    bool ok = rc == expected_rc && err && *err && !v;

    if (!ok) {
        fprintf(stderr, "  %.60s: rc %d (expected %d), err %s\n", text, rc,
                expected_rc, err ? err : "(none)");
    }
    value_unref(v);
    free(err);
    return ok;
}

static bool
json_fails(const char *text)
{
    return json_fails_lim(text, strlen(text), &codec_default_limits,
                          -EINVAL);
}

static char *
json_text(const struct value *v)
{
    struct ds ds = DS_EMPTY;

    json_write(&ds, v);
    return ds_steal(&ds);
}

static char *
xml_value_text(const struct value *v)
{
    struct ds ds = DS_EMPTY;

    xmlrpc_write_value(&ds, v);
    return ds_steal(&ds);
}

/* ---- XML-RPC: round trips and writer output ---- */

TEST(test_xmlrpc_call_round_trip_keeps_every_type)
{
    struct value *params = value_array(0), *expected, *got = NULL;
    struct ds ds = DS_EMPTY;
    char *method = NULL, *err = NULL;
    int rc;

    value_array_append(params, value_string("OpaqueRef:abc"));
    value_array_append(params, make_sample());
    value_array_append(params, value_double(-0.0));
    value_array_append(params, value_double(4.9e-324));
    value_array_append(params, value_nil());
    xmlrpc_write_call(&ds, "VM.set_other_config", params);
    CHECK(str_starts_with(ds.s, "<?xml version=\"1.0\"?><methodCall>"));
    CHECK_INT(strlen(ds.s), ds.len);
    rc = xmlrpc_parse_call(ds.s, ds.len, &codec_default_limits, &method,
                           &got, &err);
    CHECK_INT(rc, 0);
    CHECK(!err);
    if (!rc) {
        CHECK_STR(method, "VM.set_other_config");
        expected = xml_normalise(params);
        CHECK(values_match(expected, got));
        value_unref(expected);
        CHECK_STR(value_struct_get_string(got->u.arr.items[1], "memory"),
                  "9223372036854775807");
        CHECK(value_struct_get(got->u.arr.items[1], "created")->type
              == VALUE_DATETIME);
        CHECK(signbit(got->u.arr.items[2]->u.d));
    }
    free(method);
    free(err);
    value_unref(got);
    value_unref(params);
    ds_destroy(&ds);
}

TEST(test_xmlrpc_writes_xenapi_forms)
{
    struct value *v;
    char *t;

    v = value_int(123);
    t = xml_value_text(v);
    CHECK_STR(t, "<value>123</value>");
    free(t);
    value_unref(v);

    v = value_int(INT64_MIN);
    t = xml_value_text(v);
    CHECK_STR(t, "<value>-9223372036854775808</value>");
    free(t);
    value_unref(v);

    v = value_string("a&b<c>d\re\"f'");
    t = xml_value_text(v);
    CHECK_STR(t, "<value>a&amp;b&lt;c&gt;d&#13;e\"f'</value>");
    free(t);
    value_unref(v);

    t = xml_value_text(value_true());
    CHECK_STR(t, "<value><boolean>1</boolean></value>");
    free(t);
    t = xml_value_text(value_nil());
    CHECK_STR(t, "<value></value>");
    free(t);

    v = value_double(2.5);
    t = xml_value_text(v);
    CHECK_STR(t, "<value><double>2.5</double></value>");
    free(t);
    value_unref(v);

    v = value_double(NAN);
    t = xml_value_text(v);
    CHECK_STR(t, "<value><double>0</double></value>");
    free(t);
    value_unref(v);

    v = value_datetime("20240131T23:59:59Z");
    t = xml_value_text(v);
    CHECK_STR(t, "<value><dateTime.iso8601>20240131T23:59:59Z"
              "</dateTime.iso8601></value>");
    free(t);
    value_unref(v);

    v = value_struct(0);
    value_struct_put(v, "a", value_array(0));
    value_array_append(value_struct_get(v, "a"), value_string("x"));
    t = xml_value_text(v);
    CHECK_STR(t, "<value><struct><member><name>a</name><value><array><data>"
              "<value>x</value></data></array></value></member></struct>"
              "</value>");
    free(t);
    value_unref(v);
}

TEST(test_xmlrpc_doubles_round_trip_exactly)
{
    static const double cases[] = {
        0.1, 1.0 / 3, 2.2250738585072014e-308, 1.7976931348623157e308,
        -123456.789, 5e-324, 100, 0,
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct value *v = value_double(cases[i]), *back = NULL;
        char *t = xml_value_text(v);

        CHECK_INT(parse_xml_value(t, &back, NULL), 0);
        CHECK(back && back->type == VALUE_DOUBLE && back->u.d == cases[i]);
        value_unref(back);
        value_unref(v);
        free(t);
    }
}

/* ---- XML-RPC: envelopes ---- */

TEST(test_xmlrpc_success_envelope)
{
    struct value *v = value_array(0), *resp = NULL;
    struct ds ds = DS_EMPTY;
    char *err = NULL;
    bool fault = true;
    int rc;

    value_array_append(v, value_string("OpaqueRef:1"));
    xmlrpc_write_success(&ds, v);
    CHECK_STR(ds.s, "<?xml version=\"1.0\"?><methodResponse><params><param>"
              "<value><struct><member><name>Status</name><value>Success"
              "</value></member><member><name>Value</name><value><array>"
              "<data><value>OpaqueRef:1</value></data></array></value>"
              "</member></struct></value></param></params>"
              "</methodResponse>\n");
    rc = xmlrpc_parse_response(ds.s, ds.len, &codec_default_limits, &resp,
                               &fault, &err);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK(!fault);
        CHECK_STR(value_struct_get_string(resp, "Status"), "Success");
        CHECK(values_match(value_struct_get(resp, "Value"), v));
    }
    value_unref(resp);
    value_unref(v);
    free(err);
    ds_destroy(&ds);
}

TEST(test_xmlrpc_failure_envelope)
{
    struct value *e = value_array(0), *resp = NULL;
    struct ds ds = DS_EMPTY;
    bool fault = true;
    int rc;

    value_array_append(e, value_string("MAP_DUPLICATE_KEY"));
    value_array_append(e, value_string("Customer"));
    value_array_append(e, value_string("eSpiel Inc."));
    xmlrpc_write_failure(&ds, e);
    CHECK(strstr(ds.s, "<name>Status</name><value>Failure</value>"));
    CHECK(strstr(ds.s, "<name>ErrorDescription</name><value><array><data>"
                 "<value>MAP_DUPLICATE_KEY</value>"));
    rc = xmlrpc_parse_response(ds.s, ds.len, NULL, &resp, &fault, NULL);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK(!fault);
        CHECK_STR(value_struct_get_string(resp, "Status"), "Failure");
        CHECK(values_match(value_struct_get(resp, "ErrorDescription"), e));
    }
    value_unref(resp);
    value_unref(e);
    ds_destroy(&ds);
}

TEST(test_xmlrpc_plain_response_and_fault)
{
    static const char fault_doc[] =
        "<?xml version=\"1.0\"?>\n<methodResponse>\n  <fault>\n    <value>"
        "<struct><member><name>faultCode</name><value><int>4</int></value>"
        "</member><member><name>faultString</name><value><string>Too many "
        "parameters.</string></value></member></struct></value>\n  </fault>\n"
        "</methodResponse>\n";
    struct value *v = value_string("system.listMethods"), *resp = NULL;
    struct ds ds = DS_EMPTY;
    bool fault = true;
    int rc;

    xmlrpc_write_plain(&ds, v);
    CHECK_STR(ds.s, "<?xml version=\"1.0\"?><methodResponse><params><param>"
              "<value>system.listMethods</value></param></params>"
              "</methodResponse>\n");
    rc = xmlrpc_parse_response(ds.s, ds.len, NULL, &resp, &fault, NULL);
    CHECK_INT(rc, 0);
    CHECK(!fault);
    CHECK(values_match(resp, v));
    value_unref(resp);
    resp = NULL;

    rc = xmlrpc_parse_response(fault_doc, strlen(fault_doc), NULL, &resp,
                               &fault, NULL);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK(fault);
        CHECK_INT(value_struct_get(resp, "faultCode")->u.i, 4);
        CHECK_STR(value_struct_get_string(resp, "faultString"),
                  "Too many parameters.");
    }
    value_unref(resp);
    value_unref(v);
    ds_destroy(&ds);
}

TEST(test_xmlrpc_python_style_call)
{
    static const char doc[] =
        "<?xml version='1.0'?>\n"
        "<methodCall>\n"
        "<methodName>session.login_with_password</methodName>\n"
        "<params>\n"
        "<param>\n<value><string>root</string></value>\n</param>\n"
        "<param>\n<value><string>pass &amp; word</string></value>\n</param>\n"
        "<param>\n<value><string>1.0</string></value>\n</param>\n"
        "<param>\n<value><i4>7</i4></value>\n</param>\n"
        "<param>\n<value><struct>\n<member>\n<name>a</name>\n"
        "<value><int>-1</int></value>\n</member>\n</struct></value>\n"
        "</param>\n"
        "</params>\n"
        "</methodCall>\n";
    struct value *params = NULL;
    char *method = NULL;
    int rc;

    rc = xmlrpc_parse_call(doc, strlen(doc), NULL, &method, &params, NULL);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK_STR(method, "session.login_with_password");
        CHECK_INT(params->u.arr.n, 5);
        CHECK_STR(params->u.arr.items[1]->u.str.s, "pass & word");
        CHECK_INT(params->u.arr.items[3]->type, VALUE_INT);
        CHECK_INT(params->u.arr.items[3]->u.i, 7);
        CHECK_INT(value_struct_get(params->u.arr.items[4], "a")->u.i, -1);
    }
    free(method);
    value_unref(params);
}

TEST(test_xmlrpc_call_without_params)
{
    static const char *const docs[] = {
        "<methodCall><methodName>system.listMethods</methodName>"
        "</methodCall>",
        "<methodCall><methodName> system.listMethods </methodName><params/>"
        "</methodCall>",
        "<methodCall ><methodName>system.listMethods</methodName >"
        "<params></params></methodCall>",
    };

    for (size_t i = 0; i < ARRAY_SIZE(docs); i++) {
        struct value *params = NULL;
        char *method = NULL;
        int rc = xmlrpc_parse_call(docs[i], strlen(docs[i]), NULL, &method,
                                   &params, NULL);
        CHECK_INT(rc, 0);
        if (!rc) {
            CHECK_STR(method, "system.listMethods");
            CHECK_INT(params->type, VALUE_ARRAY);
            CHECK_INT(params->u.arr.n, 0);
        }
        free(method);
        value_unref(params);
    }
}

TEST(test_xmlrpc_control_characters_round_trip)
{
    /* XML 1.0 cannot carry most control characters, but a JSON client can
     * store them; the XML writer passes them through and the reader
     * accepts them back rather than failing on its own output. */
    struct value *v = value_string("tab\there\nnew\x01\x1f\x7f\r");
    struct value *back = NULL;
    char *t = xml_value_text(v);

    CHECK_INT(parse_xml_value(t, &back, NULL), 0);
    CHECK(back && values_match(back, v));
    value_unref(back);
    value_unref(v);
    free(t);
}

TEST(test_xmlrpc_fault_must_hold_a_struct)
{
    static const char doc[] = "<methodResponse><fault><value>oops</value>"
                              "</fault></methodResponse>";
    struct value *v = NULL;
    char *err = NULL;
    bool fault = false;

    CHECK_INT(xmlrpc_parse_response(doc, strlen(doc), NULL, &v, &fault, &err),
              -EINVAL);
    CHECK(!v && err && strstr(err, "struct"));
    free(err);
}

/* ---- XML-RPC: input forms ---- */

TEST(test_xmlrpc_typed_integers)
{
    static const struct {
        const char *xml;
        int64_t v;
    } ok[] = {
        { "<value><i4>42</i4></value>", 42 },
        { "<value><int> -7 </int></value>", -7 },
        { "<value><int>+5</int></value>", 5 },
        { "<value><i4>2147483647</i4></value>", INT32_MAX },
        { "<value><i4>-2147483648</i4></value>", INT32_MIN },
        { "<value><i8>9223372036854775807</i8></value>", INT64_MAX },
        { "<value><i8>-9223372036854775808</i8></value>", INT64_MIN },
        { "<value><i8>0007</i8></value>", 7 },
    };
    static const char *const bad[] = {
        "<value><i4>2147483648</i4></value>",
        "<value><int>-2147483649</int></value>",
        "<value><i8>9223372036854775808</i8></value>",
        "<value><i8>-9223372036854775809</i8></value>",
        "<value><int></int></value>",
        "<value><int/></value>",
        "<value><int>-</int></value>",
        "<value><int>1.0</int></value>",
        "<value><int>12a</int></value>",
        "<value><int>1 2</int></value>",
        "<value><int>0x10</int></value>",
    };

    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        struct value *v = NULL;
        CHECK_INT(parse_xml_value(ok[i].xml, &v, NULL), 0);
        CHECK(v && v->type == VALUE_INT && v->u.i == ok[i].v);
        value_unref(v);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(xml_value_fails(bad[i], -EINVAL));
    }
}

TEST(test_xmlrpc_strings_with_and_without_type)
{
    static const struct {
        const char *xml;
        const char *s;
    } cases[] = {
        { "<value>Halted</value>", "Halted" },
        { "<value>  spaced  </value>", "  spaced  " },
        { "<value><string>  typed  </string></value>", "  typed  " },
        { "<value>\n  <string>x</string>\n</value>", "x" },
        { "<value/>", "" },
        { "<value></value>", "" },
        { "<value><string/></value>", "" },
        { "<value><string></string></value>", "" },
        { "<value>a<!-- comment -->b</value>", "ab" },
        { "<value><![CDATA[<b>&amp;</b>]]></value>", "<b>&amp;</b>" },
        { "<value>x<![CDATA[]]>y</value>", "xy" },
        { "<value>caf\xc3\xa9</value>", "caf\xc3\xa9" },
        { "<value>a\r\nb</value>", "a\r\nb" },
        { "<value><base64>aGVsbG8gd29ybGQ=</base64></value>",
          "hello world" },
        { "<value><base64>\n  aGVs\n  bG8=\n</base64></value>", "hello" },
        { "<value><base64></base64></value>", "" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct value *v = NULL;
        CHECK_INT(parse_xml_value(cases[i].xml, &v, NULL), 0);
        CHECK(v && v->type == VALUE_STRING);
        if (v && v->type == VALUE_STRING) {
            CHECK_STR(v->u.str.s, cases[i].s);
        }
        value_unref(v);
    }
}

TEST(test_xmlrpc_other_scalar_types)
{
    struct value *v = NULL;

    CHECK_INT(parse_xml_value("<value><boolean>1</boolean></value>", &v,
                              NULL), 0);
    CHECK(v == value_true());
    CHECK_INT(parse_xml_value("<value><boolean> 0 </boolean></value>", &v,
                              NULL), 0);
    CHECK(v == value_false());
    CHECK_INT(parse_xml_value("<value><nil/></value>", &v, NULL), 0);
    CHECK(v && v->type == VALUE_NIL);
    CHECK_INT(parse_xml_value("<value><nil></nil></value>", &v, NULL), 0);
    CHECK(v && v->type == VALUE_NIL);

    v = NULL;
    CHECK_INT(parse_xml_value("<value><double>-1.5e3</double></value>", &v,
                              NULL), 0);
    CHECK(v && v->type == VALUE_DOUBLE && v->u.d == -1500.0);
    value_unref(v);

    /* Forms some clients write, though JSON would not allow them. */
    v = NULL;
    CHECK_INT(parse_xml_value("<value><double> 1. </double></value>", &v,
                              NULL), 0);
    CHECK(v && v->type == VALUE_DOUBLE && v->u.d == 1.0);
    value_unref(v);
    v = NULL;
    CHECK_INT(parse_xml_value("<value><double>+.5</double></value>", &v,
                              NULL), 0);
    CHECK(v && v->type == VALUE_DOUBLE && v->u.d == 0.5);
    value_unref(v);

    v = NULL;
    CHECK_INT(parse_xml_value("<value><dateTime.iso8601> 20240131T23:59:59Z "
                              "</dateTime.iso8601></value>", &v, NULL), 0);
    CHECK(v && v->type == VALUE_DATETIME);
    if (v && v->type == VALUE_DATETIME) {
        CHECK_STR(v->u.str.s, "20240131T23:59:59Z");
    }
    value_unref(v);

    v = NULL;
    CHECK_INT(parse_xml_value("<value><array><data/></array></value>", &v,
                              NULL), 0);
    CHECK(v && v->type == VALUE_ARRAY && v->u.arr.n == 0);
    value_unref(v);

    v = NULL;
    CHECK_INT(parse_xml_value("<value><struct></struct></value>", &v, NULL),
              0);
    CHECK(v && v->type == VALUE_STRUCT && v->u.st.n == 0);
    value_unref(v);
}

TEST(test_xmlrpc_entities_and_character_references)
{
    static const struct {
        const char *xml;
        const char *s;
    } cases[] = {
        { "<value>&amp;&lt;&gt;&quot;&apos;</value>", "&<>\"'" },
        { "<value>&#65;&#x42;</value>", "AB" },
        { "<value>&#x263A;</value>", "\xe2\x98\xba" },
        { "<value>&#233;</value>", "\xc3\xa9" },
        { "<value>&#x1F600;</value>", "\xf0\x9f\x98\x80" },
        { "<value>&#13;&#10;</value>", "\r\n" },
        { "<value><string>a&amp;amp;b</string></value>", "a&amp;b" },
        { "<value><struct><member><name>&lt;k&gt;</name><value>v</value>"
          "</member></struct></value>", NULL },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct value *v = NULL;

        CHECK_INT(parse_xml_value(cases[i].xml, &v, NULL), 0);
        if (!v) {
            continue;
        }
        if (cases[i].s) {
            CHECK_STR(v->u.str.s, cases[i].s);
        } else {
            CHECK(value_struct_get(v, "<k>") != NULL);
        }
        value_unref(v);
    }

    /* Hexadecimal references take a lower-case x only. */
    CHECK(xml_value_fails("<value>&#X43;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&foo;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>a & b</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&amp</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#0;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#xD800;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#x110000;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#99999999999999999999;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#x;</value>", -EINVAL));
    CHECK(xml_value_fails("<value>&#12a;</value>", -EINVAL));
}

TEST(test_xmlrpc_declaration_comments_and_whitespace)
{
    static const char doc[] =
        "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!-- a request -->\r\n"
        "<methodCall xmlns:ex=\"http://example.org\">\n"
        "  <!-- the method -->\n"
        "  <methodName>VM.get_all</methodName>\n"
        "  <params>\n"
        "    <?pi ignored?>\n"
        "    <param> <value> <string>OpaqueRef:s</string> </value> </param>\n"
        "    <param>\n"
        "      <value>\n"
        "        <array>\n"
        "          <data>\n"
        "            <value>a</value>\n"
        "            <!-- between values -->\n"
        "            <value/>\n"
        "          </data>\n"
        "        </array>\n"
        "      </value>\n"
        "    </param>\n"
        "  </params>\n"
        "</methodCall>\n"
        "<!-- trailing comment -->\n";
    struct value *params = NULL;
    char *method = NULL, *err = NULL;
    int rc;

    rc = xmlrpc_parse_call(doc, strlen(doc), NULL, &method, &params, &err);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK_STR(method, "VM.get_all");
        CHECK_INT(params->u.arr.n, 2);
        CHECK_STR(params->u.arr.items[0]->u.str.s, "OpaqueRef:s");
        CHECK_INT(params->u.arr.items[1]->u.arr.n, 2);
        CHECK_STR(params->u.arr.items[1]->u.arr.items[1]->u.str.s, "");
    } else {
        fprintf(stderr, "  %s\n", err);
    }
    free(err);
    free(method);
    value_unref(params);
}

TEST(test_xmlrpc_duplicate_struct_members_last_wins)
{
    struct value *v = NULL;
    struct ds ds = DS_EMPTY;

    CHECK_INT(parse_xml_value("<value><struct>"
                              "<member><name>a</name><value>1</value></member>"
                              "<member><name>b</name><value>2</value></member>"
                              "<member><name>a</name><value>3</value></member>"
                              "</struct></value>", &v, NULL), 0);
    CHECK(v && v->u.st.n == 2);
    CHECK_STR(value_struct_get_string(v, "a"), "3");
    CHECK_STR(value_struct_get_string(v, "b"), "2");
    value_unref(v);
    v = NULL;

    /* Large structs take the hashed path. */
    ds_put_cstr(&ds, "<value><struct>");
    for (int i = 0; i < 1000; i++) {
        ds_put_fmt(&ds, "<member><name>k%d</name><value>%d</value></member>",
                   i % 300, i);
    }
    ds_put_cstr(&ds, "</struct></value>");
    CHECK_INT(parse_xml_value(ds.s, &v, NULL), 0);
    CHECK(v && v->u.st.n == 300);
    CHECK_STR(value_struct_get_string(v, "k0"), "900");
    CHECK_STR(value_struct_get_string(v, "k299"), "899");
    CHECK_STR(value_struct_get_string(v, "k100"), "700");
    value_unref(v);
    ds_destroy(&ds);
}

/* ---- XML-RPC: malformed and hostile input ---- */

TEST(test_xmlrpc_rejects_doctype_and_entity_declarations)
{
    static const char laughs[] =
        "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE lolz [\n"
        " <!ENTITY lol \"lol\">\n"
        " <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        "]>\n"
        "<methodCall><methodName>&lol2;</methodName></methodCall>";
    static const char inside[] =
        "<methodCall><methodName>m</methodName><params><param><value>"
        "<!ENTITY x \"y\"></value></param></params></methodCall>";

    CHECK(xml_call_fails(laughs, NULL, -EINVAL));
    CHECK(xml_call_fails(inside, NULL, -EINVAL));
}

TEST(test_xmlrpc_rejects_malformed_documents)
{
    static const char *const bad_calls[] = {
        "",
        "   ",
        "not xml",
        "<methodCall/>",
        "<methodCall></methodCall>",
        "<methodCall><methodName></methodName></methodCall>",
        "<methodCall><methodName>m</methodName></methodcall>",
        "<methodCall><methodName>m</methodName></methodCall>junk",
        "<methodCall><methodName>m</methodName></methodCall><methodCall/>",
        "<methodCall><methodName>m</methodName><params><param></param>"
        "</params></methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value>x"
        "</param></params></methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value>"
        "<string>x</value></string></param></params></methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value>"
        "<foo>x</foo></value></param></params></methodCall>",
        "<methodCall><methodName>m<b/></methodName></methodCall>",
        "<methodResponse><params/></methodResponse>",
        "<methodCall><methodName>m</methodName><params><param><value>x"
        "</value></param></params></methodCall",
        "<methodCall><methodName>m</methodName><params attr></params>"
        "</methodCall>",
        "<methodCall><methodName>m</methodName><params a=\"1<\"></params>"
        "</methodCall>",
        "<methodCall><methodName>m\xff</methodName></methodCall>",
        "<methodCall><!-- unterminated </methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value>"
        "<![CDATA[x</value></param></params></methodCall>",
    };
    static const char *const bad_values[] = {
        "<value>abc<string>x</string></value>",
        "<value><string>x</string>abc</value>",
        "<value><string>x</string><string>y</string></value>",
        "<value><boolean>true</boolean></value>",
        "<value><boolean>2</boolean></value>",
        "<value><boolean/></value>",
        "<value><double>abc</double></value>",
        "<value><double>1e999</double></value>",
        "<value><double>nan</double></value>",
        "<value><double>inf</double></value>",
        "<value><double>0x1p3</double></value>",
        "<value><double>1e</double></value>",
        "<value><double></double></value>",
        "<value><base64>a</base64></value>",
        "<value><base64>abc</base64></value>",
        "<value><base64>ab!c</base64></value>",
        "<value><base64>a===</base64></value>",
        "<value><base64>ab=c</base64></value>",
        "<value><base64>aGk=aGk=</base64></value>",
        "<value><base64>AA==</base64></value>",
        "<value><base64>/w==</base64></value>",
        "<value><nil>x</nil></value>",
        "<value><array><value>x</value></array></value>",
        "<value><array><data><string>x</string></data></array></value>",
        "<value><struct><member><value>x</value></member></struct></value>",
        "<value><struct><member><name>a</name></member></struct></value>",
        ("<value><struct><member><name>a</name><value>x</value><value/>"
         "</member></struct></value>"),
        "<value><struct><value>x</value></struct></value>",
        "<value><struct><member/></struct></value>",
        "<value><params/></value>",
        "<value>\x01\x02\xc0\x80</value>",
        "<value>\xed\xa0\x80</value>",
    };

    for (size_t i = 0; i < ARRAY_SIZE(bad_calls); i++) {
        CHECK(xml_call_fails(bad_calls[i], NULL, -EINVAL));
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad_values); i++) {
        CHECK(xml_value_fails(bad_values[i], -EINVAL));
    }

    /* A NUL byte in the middle of the document. */
    {
        static const char doc[] = "<methodCall><methodName>a\0b</methodName>"
                                  "</methodCall>";
        struct value *params = NULL;
        char *method = NULL, *err = NULL;
        CHECK_INT(xmlrpc_parse_call(doc, sizeof doc - 1, NULL, &method,
                                    &params, &err), -EINVAL);
        CHECK(err && strstr(err, "NUL"));
        CHECK(!method && !params);
        free(err);
    }
}

TEST(test_xmlrpc_every_truncation_fails_cleanly)
{
    struct value *sample = make_sample(), *params = value_array(0);
    struct ds ds = DS_EMPTY;

    value_array_append(params, sample);
    xmlrpc_write_call(&ds, "VM.create", params);
    /* The final "\n" is optional, so stop before it. */
    for (size_t len = 0; len + 1 < ds.len; len++) {
        struct value *got = NULL;
        char *method = NULL, *err = NULL;
        int rc = xmlrpc_parse_call(ds.s, len, NULL, &method, &got, &err);
        if (rc != -EINVAL || !err || method || got) {
            fprintf(stderr, "  prefix of %zu bytes: rc %d\n", len, rc);
            test_failures_++;
        }
        free(method);
        free(err);
        value_unref(got);
    }
    value_unref(params);
    ds_destroy(&ds);
}

TEST(test_xmlrpc_limits)
{
    struct codec_limits lim = codec_default_limits;
    struct ds ds = DS_EMPTY, doc = DS_EMPTY;
    struct value *params = NULL, *v = NULL;
    char *method = NULL;

    /* Depth: 64 nested arrays pass, 65 do not. */
    for (int depth = 64; depth <= 65; depth++) {
        ds_clear(&ds);
        for (int i = 0; i < depth; i++) {
            ds_put_cstr(&ds, "<value><array><data>");
        }
        for (int i = 0; i < depth; i++) {
            ds_put_cstr(&ds, "</data></array></value>");
        }
        if (depth == 64) {
            CHECK_INT(parse_xml_value(ds.s, &v, NULL), 0);
            value_unref(v);
            v = NULL;
        } else {
            CHECK(xml_value_fails(ds.s, -E2BIG));
        }
    }

    /* Hostile depth far beyond any limit must not exhaust the stack. */
    ds_clear(&ds);
    for (int i = 0; i < 200000; i++) {
        ds_put_cstr(&ds, "<value><struct><member><name>a</name>");
    }
    lim.max_depth = SIZE_MAX;
    ds_clear(&doc);
    ds_put_fmt(&doc, "<methodCall><methodName>m</methodName><params><param>"
               "%s", ds.s);
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));
    lim = codec_default_limits;

    /* String length, counted after decoding. */
    lim.max_string = 10;
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>m</methodName><params><param>"
                "<value>0123456789</value></param></params></methodCall>");
    CHECK_INT(xmlrpc_parse_call(doc.s, doc.len, &lim, &method, &params, NULL),
              0);
    free(method);
    value_unref(params);
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>m</methodName><params><param>"
                "<value>0123456789a</value></param></params></methodCall>");
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>m</methodName><params><param>"
                "<value>&amp;&amp;&amp;&amp;&amp;&amp;&amp;&amp;&amp;&amp;"
                "&amp;</value></param></params></methodCall>");
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>m</methodName><params><param>"
                "<value><struct><member><name>abcdefghijk</name><value/>"
                "</member></struct></value></param></params></methodCall>");
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>abcdefghijk</methodName>"
                "</methodCall>");
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));
    lim = codec_default_limits;

    /* Item count. */
    lim.max_items = 3;
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>m</methodName><params><param>"
                "<value><array><data><value/><value/></data></array></value>"
                "</param></params></methodCall>");
    CHECK_INT(xmlrpc_parse_call(doc.s, doc.len, &lim, &method, &params, NULL),
              0);
    free(method);
    value_unref(params);
    ds_clear(&doc);
    ds_put_cstr(&doc, "<methodCall><methodName>m</methodName><params><param>"
                "<value><array><data><value/><value/><value/></data></array>"
                "</value></param></params></methodCall>");
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));
    lim = codec_default_limits;

    /* Input size. */
    lim.max_input = doc.len - 1;
    CHECK(xml_call_fails(doc.s, &lim, -E2BIG));

    ds_destroy(&ds);
    ds_destroy(&doc);
}

/* ---- JSON ---- */

TEST(test_json_round_trip_keeps_every_type)
{
    struct value *v = make_sample(), *back = NULL, *expected;
    char *text = json_text(v), *text2;
    char *err = NULL;
    int rc;

    rc = json_parse(text, strlen(text), &codec_default_limits, &back, &err);
    CHECK_INT(rc, 0);
    if (!rc) {
        /* Datetimes travel as strings in JSON. */
        expected = value_clone(v);
        value_struct_set(expected, "created",
                         value_string("20240131T23:59:59Z"));
        CHECK(values_match(expected, back));
        value_unref(expected);
        text2 = json_text(back);
        CHECK_STR(text2, text);
        free(text2);
    } else {
        fprintf(stderr, "  %s\n", err);
    }
    value_unref(back);
    value_unref(v);
    free(text);
    free(err);
}

TEST(test_json_writer_output)
{
    struct value *v = value_struct(0);
    char *t;

    value_struct_put(v, "i", value_int(-5));
    value_struct_put(v, "d", value_double(1.0));
    value_struct_put(v, "e", value_double(1e300));
    value_struct_put(v, "nan", value_double(NAN));
    value_struct_put(v, "inf", value_double(-INFINITY));
    value_struct_put(v, "z", value_double(-0.0));
    value_struct_put(v, "n", value_nil());
    value_struct_put(v, "b", value_true());
    value_struct_put(v, "s", value_string("q\"b\\n\n\x01/\xc3\xa9"));
    value_struct_put(v, "t", value_datetime("20240131T23:59:59Z"));
    value_struct_put(v, "a", value_empty_array());
    value_struct_put(v, "o", value_empty_struct());
    t = json_text(v);
    CHECK_STR(t, "{\"i\":-5,\"d\":1.0,\"e\":1.0000000000000001e+300,"
              "\"nan\":0.0,\"inf\":0.0,\"z\":-0.0,\"n\":null,\"b\":true,"
              "\"s\":\"q\\\"b\\\\n\\n\\u0001/\xc3\xa9\","
              "\"t\":\"20240131T23:59:59Z\",\"a\":[],\"o\":{}}");
    free(t);
    value_unref(v);
}

TEST(test_json_integers_and_int64_extremes)
{
    static const struct {
        const char *text;
        enum value_type type;
        int64_t i;
        double d;
    } cases[] = {
        { "0", VALUE_INT, 0, 0 },
        { "-0", VALUE_INT, 0, 0 },
        { "9223372036854775807", VALUE_INT, INT64_MAX, 0 },
        { "-9223372036854775808", VALUE_INT, INT64_MIN, 0 },
        { "9223372036854775808", VALUE_DOUBLE, 0, 9223372036854775808.0 },
        { "-9223372036854775809", VALUE_DOUBLE, 0, -9223372036854775809.0 },
        { "18446744073709551616", VALUE_DOUBLE, 0, 18446744073709551616.0 },
        { "1.5", VALUE_DOUBLE, 0, 1.5 },
        { "1e2", VALUE_DOUBLE, 0, 100 },
        { "-2.5E-3", VALUE_DOUBLE, 0, -2.5e-3 },
        { "1E+2", VALUE_DOUBLE, 0, 100 },
        { "0.0", VALUE_DOUBLE, 0, 0 },
        { "1e-400", VALUE_DOUBLE, 0, 0 },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct value *v = json_ok(cases[i].text);
        CHECK(v && v->type == cases[i].type);
        if (v && v->type == VALUE_INT) {
            CHECK_INT(v->u.i, cases[i].i);
        } else if (v && v->type == VALUE_DOUBLE) {
            CHECK(v->u.d == cases[i].d);
        }
        value_unref(v);
    }
    {
        struct value *v = value_int(INT64_MIN);
        char *t = json_text(v);
        CHECK_STR(t, "-9223372036854775808");
        free(t);
        value_unref(v);
    }
}

TEST(test_json_unicode_escapes)
{
    static const struct {
        const char *text;
        const char *s;
    } cases[] = {
        { "\"\\u0041\\u00e9\\u263A\"", "A\xc3\xa9\xe2\x98\xba" },
        { "\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80" },
        { "\"\\uD83D\\uDE00x\"", "\xf0\x9f\x98\x80x" },
        { "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t" },
        { "\"raw \xf0\x9f\x98\x80 utf8\"", "raw \xf0\x9f\x98\x80 utf8" },
        { "\"\"", "" },
    };
    static const char *const bad[] = {
        "\"\\ud83d\"",
        "\"\\ud83dx\"",
        "\"\\ud83d\\u0041\"",
        "\"\\ude00\"",
        "\"\\u0000\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\\x41\"",
        "\"\\'\"",
        "\"a\nb\"",
        "\"a\tb\"",
        "\"\x01\"",
        "\"\xff\"",
        "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xe2\x98\"",
        "\"unterminated",
        "\"\\",
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct value *v = json_ok(cases[i].text);
        CHECK(v && v->type == VALUE_STRING);
        if (v && v->type == VALUE_STRING) {
            CHECK_STR(v->u.str.s, cases[i].s);
        }
        value_unref(v);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(json_fails(bad[i]));
    }
}

TEST(test_json_rejects_malformed_input)
{
    static const char *const bad[] = {
        "", " ", "01", "-01", "00", "-", "+1", "1.", ".5", "1e", "1e+",
        "1.e5", "NaN", "Infinity", "-Infinity", "nan", "1e400", "-1e400",
        "0x10", "tru", "truee", "nul", "True", "[1,]", "[,1]", "[1 2]",
        "[", "]", "{", "}", "{\"a\" 1}", "{\"a\":}", "{\"a\":1,}", "{a:1}",
        "{'a':1}", "{\"a\":1 \"b\":2}", "1 2", "[] []", "\"a\" x", "[1]]",
        "{\"a\":1}}", "/* c */ 1", "[1,\n", "\x01",
    };

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(json_fails(bad[i]));
    }
    /* A NUL byte after a valid value is trailing garbage. */
    CHECK(json_fails_lim("1\0", 2, &codec_default_limits, -EINVAL));
}

TEST(test_json_accepts_whitespace_and_bom)
{
    struct value *v = json_ok("\xef\xbb\xbf \t\r\n{ \"a\" : [ 1 , 2 ] }\n");

    CHECK(v && v->type == VALUE_STRUCT);
    if (v) {
        CHECK_INT(value_struct_get(v, "a")->u.arr.n, 2);
    }
    value_unref(v);
}

TEST(test_json_duplicate_keys_last_wins)
{
    struct value *v = json_ok("{\"a\":1,\"b\":2,\"a\":3}");
    struct ds ds = DS_EMPTY;

    CHECK(v && v->u.st.n == 2);
    if (v) {
        CHECK_INT(value_struct_get(v, "a")->u.i, 3);
    }
    value_unref(v);

    ds_put_char(&ds, '{');
    for (int i = 0; i < 1000; i++) {
        ds_put_fmt(&ds, "%s\"k%d\":%d", i ? "," : "", i % 300, i);
    }
    ds_put_char(&ds, '}');
    v = json_ok(ds.s);
    CHECK(v && v->u.st.n == 300);
    if (v) {
        CHECK_INT(value_struct_get(v, "k0")->u.i, 900);
        CHECK_INT(value_struct_get(v, "k299")->u.i, 899);
    }
    value_unref(v);
    ds_destroy(&ds);
}

TEST(test_json_rpc_envelopes)
{
    static const char v1_req[] =
        "{\"method\": \"host.get_resident_VMs\", \"params\": "
        "[\"OpaqueRef:74f1a19cd-b660-41e3-a163-10f03e0eae67\", "
        "\"OpaqueRef:08c34fc9-f418-4f09-8274-b9cb25cd8550\"], "
        "\"id\": \"xyz\"}";
    static const char v2_req[] =
        "{\"jsonrpc\": \"2.0\", \"method\": \"session.login_with_password\","
        " \"params\": [\"user\", \"passwd\", \"version\", \"originator\"],"
        " \"id\": 0}";
    static const char v1_err[] =
        "{\"result\": null, \"error\": [\"SESSION_INVALID\", "
        "\"OpaqueRef:93f1a23cd\"], \"id\": \"xyz\"}";
    static const char v2_err[] =
        "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": 1, \"message\": "
        "\"MAP_DUPLICATE_KEY\", \"data\": [\"Customer\", \"eSpiel Inc.\"]},"
        " \"id\": 3}";
    struct value *v;

    v = json_ok(v1_req);
    CHECK_STR(value_struct_get_string(v, "method"), "host.get_resident_VMs");
    CHECK(value_struct_get(v, "params")
          && value_struct_get(v, "params")->u.arr.n == 2);
    CHECK_STR(value_struct_get_string(v, "id"), "xyz");
    value_unref(v);

    v = json_ok(v2_req);
    CHECK_STR(value_struct_get_string(v, "jsonrpc"), "2.0");
    CHECK(value_struct_get(v, "id")
          && value_struct_get(v, "id")->type == VALUE_INT);
    value_unref(v);

    v = json_ok(v1_err);
    CHECK(value_struct_get(v, "result")
          && value_struct_get(v, "result")->type == VALUE_NIL);
    CHECK(value_struct_get(v, "error")
          && value_struct_get(v, "error")->u.arr.n == 2);
    value_unref(v);

    v = json_ok(v2_err);
    CHECK_STR(value_struct_get_string(value_struct_get(v, "error"),
                                      "message"), "MAP_DUPLICATE_KEY");
    value_unref(v);
}

TEST(test_json_limits)
{
    struct codec_limits lim = codec_default_limits;
    struct ds ds = DS_EMPTY;
    struct value *v = NULL;

    for (int depth = 64; depth <= 65; depth++) {
        ds_clear(&ds);
        for (int i = 0; i < depth; i++) {
            ds_put_cstr(&ds, i % 2 ? "{\"k\":" : "[");
        }
        ds_put_char(&ds, '0');
        for (int i = depth - 1; i >= 0; i--) {
            ds_put_char(&ds, i % 2 ? '}' : ']');
        }
        if (depth == 64) {
            v = json_ok(ds.s);
            CHECK(v != NULL);
            value_unref(v);
        } else {
            CHECK(json_fails_lim(ds.s, ds.len, &lim, -E2BIG));
        }
    }

    /* Hostile depth far beyond any limit must not exhaust the stack. */
    ds_clear(&ds);
    for (int i = 0; i < 1000000; i++) {
        ds_put_char(&ds, '[');
    }
    lim.max_depth = SIZE_MAX;
    CHECK(json_fails_lim(ds.s, ds.len, &lim, -E2BIG));
    lim = codec_default_limits;

    lim.max_string = 4;
    CHECK(json_fails_lim("\"abcde\"", 7, &lim, -E2BIG));
    CHECK(json_fails_lim("\"\\u0041bcde\"", 12, &lim, -E2BIG));
    CHECK(json_fails_lim("{\"abcde\":1}", 11, &lim, -E2BIG));
    v = NULL;
    CHECK_INT(json_parse("\"abcd\"", 6, &lim, &v, NULL), 0);
    value_unref(v);
    lim = codec_default_limits;

    lim.max_items = 3;
    v = NULL;
    CHECK_INT(json_parse("[1,2]", 5, &lim, &v, NULL), 0);
    value_unref(v);
    CHECK(json_fails_lim("[1,2,3]", 7, &lim, -E2BIG));
    CHECK(json_fails_lim("{\"a\":1,\"b\":2,\"c\":3}", 19, &lim, -E2BIG));
    lim = codec_default_limits;

    lim.max_input = 4;
    CHECK(json_fails_lim("[1,2]", 5, &lim, -E2BIG));
    v = NULL;
    CHECK_INT(json_parse("[12]", 4, &lim, &v, NULL), 0);
    value_unref(v);

    ds_destroy(&ds);
}

TEST(test_json_every_truncation_fails_cleanly)
{
    struct value *v = make_sample();
    char *text = json_text(v);
    size_t len = strlen(text);

    for (size_t n = 0; n < len; n++) {
        struct value *got = NULL;
        char *err = NULL;
        int rc = json_parse(text, n, NULL, &got, &err);
        if (rc != -EINVAL || !err || got) {
            fprintf(stderr, "  prefix of %zu bytes: rc %d\n", n, rc);
            test_failures_++;
        }
        free(err);
        value_unref(got);
    }
    free(text);
    value_unref(v);
}

/* ---- the big answer ---- */

/* Builds what VM.get_all_records returns for n VMs of 90 fields. */
static struct value *
make_records(int n)
{
    struct value *all = value_struct(n);

    for (int i = 0; i < n; i++) {
        struct value *rec = value_struct(90);
        char ref[64], uuid[37];

        uuid_generate(uuid);
        snprintf(ref, sizeof ref, "OpaqueRef:%s", uuid);
        value_struct_put(rec, "uuid", value_string(uuid));
        value_struct_put(rec, "name_label", value_stringf("vm-%d <test>", i));
        value_struct_put(rec, "power_state", value_string("Running"));
        value_struct_put(rec, "memory_static_max", value_int(4294967296LL));
        value_struct_put(rec, "is_a_template", value_false());
        value_struct_put(rec, "other_config", value_empty_struct());
        value_struct_put(rec, "VBDs", value_empty_array());
        for (int f = 7; f < 90; f++) {
            char name[32];
            snprintf(name, sizeof name, "field_number_%d", f);
            switch (f % 5) {
            case 0:
                value_struct_put(rec, name, value_int(f * 1000003LL));
                break;
            case 1:
                value_struct_put(rec, name, value_bool(f & 2));
                break;
            case 2:
                value_struct_put(rec, name, value_null_ref());
                break;
            default:
                value_struct_put(rec, name,
                                 value_string("some descriptive text"));
                break;
            }
        }
        value_struct_put(all, ref, rec);
    }
    return all;
}

TEST(test_big_document_writers)
{
    struct value *all = make_records(10000), *back = NULL;
    struct codec_limits lim = codec_default_limits;
    struct ds ds = DS_EMPTY;
    int64_t t0, t1;
    bool fault;
    int rc;

    t0 = time_mono_us();
    xmlrpc_write_success(&ds, all);
    t1 = time_mono_us();
    fprintf(stderr, "  XML-RPC: %zu bytes in %.1f ms\n", ds.len,
            (t1 - t0) / 1000.0);
    CHECK(ds.len > 40 * 1000 * 1000);
    CHECK_INT(strlen(ds.s), ds.len);
    /* The answer is larger than a request may be. */
    lim.max_input = SIZE_MAX;
    rc = xmlrpc_parse_response(ds.s, ds.len, &lim, &back, &fault, NULL);
    CHECK_INT(rc, 0);
    if (!rc) {
        struct value *val = value_struct_get(back, "Value");
        CHECK(val && val->type == VALUE_STRUCT && val->u.st.n == 10000);
    }
    value_unref(back);
    back = NULL;

    ds_clear(&ds);
    t0 = time_mono_us();
    json_write(&ds, all);
    t1 = time_mono_us();
    fprintf(stderr, "  JSON: %zu bytes in %.1f ms\n", ds.len,
            (t1 - t0) / 1000.0);
    CHECK_INT(strlen(ds.s), ds.len);
    rc = json_parse(ds.s, ds.len, &codec_default_limits, &back, NULL);
    CHECK_INT(rc, 0);
    CHECK(back && values_match(back, all));
    value_unref(back);

    value_unref(all);
    ds_destroy(&ds);
}
