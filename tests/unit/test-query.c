/* test-query.c — tests of xapi/query.c, the parser and evaluator behind
 * get_all_records_where.
 *
 * Rows are small tables of field name and string form, standing in for
 * what db.c supplies through db_field_to_query_string. */
#include <config.h>

#define TEST_MAIN
#include "tests/unit/test.h"

#include <errno.h>

#include "query.h"
#include "util.h"

struct field {
    const char *name;
    const char *value;
};

/* A row: fields up to a NULL name. */
struct row {
    const struct field *fields;
    int lookups;            /* how many times get_field was called */
};

static bool
row_get_field(void *row_, const char *name, struct ds *out)
{
    struct row *row = row_;

    row->lookups++;
    for (const struct field *f = row->fields; f->name; f++) {
        if (!strcmp(f->name, name)) {
            ds_put_cstr(out, f->value);
            return true;
        }
    }
    return false;
}

static const struct field running_vm[] = {
    { "name_label", "web \"front\" \\ 1" },
    { "power_state", "Running" },
    { "is_a_template", "false" },
    { "memory_static_max", "4294967296" },
    { "empty", "" },
    { NULL, NULL },
};

static const struct field halted_template[] = {
    { "name_label", "Debian 12" },
    { "power_state", "Halted" },
    { "is_a_template", "true" },
    { "memory_static_max", "1073741824" },
    { "empty", "" },
    { NULL, NULL },
};

/* Parses text and evaluates it against fields; returns what query_eval
 * returns, or -1000 if the text does not parse (the test then fails). */
static int
eval_on(const char *text, const struct field *fields)
{
    struct query *q = NULL;
    struct row row = { .fields = fields };
    const char *missing = NULL;
    char *err = NULL;
    int rc;

    rc = query_parse(text, &q, &err);
    if (rc) {
        fprintf(stderr, "  parse of %s failed: %s\n", text, err);
        free(err);
        return -1000;
    }
    rc = query_eval(q, row_get_field, &row, &missing);
    query_free(q);
    return rc;
}

/* Parses text, which must fail, and returns the message (caller frees). */
static char *
parse_error(const char *text)
{
    struct query *q = NULL;
    char *err = NULL;
    int rc;

    rc = query_parse(text, &q, &err);
    if (rc != -EINVAL) {
        fprintf(stderr, "  parse of %s gave %d, expected -EINVAL\n", text,
                rc);
        query_free(q);
        return xstrdup("");
    }
    return err;
}

static bool
contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle)) {
        fprintf(stderr, "  \"%s\" does not contain \"%s\"\n", haystack,
                needle);
        return false;
    }
    return true;
}

TEST(test_xenapi_example_matches_running_non_template)
{
    const char *q = "field \"power_state\" = \"Running\" and "
                    "field \"is_a_template\" = \"false\"";

    CHECK_INT(eval_on(q, running_vm), 1);
    CHECK_INT(eval_on(q, halted_template), 0);
}

TEST(test_not_with_parentheses_as_in_the_header)
{
    const char *q = "field \"power_state\" = \"Running\" and "
                    "not (field \"is_a_template\" = \"true\")";

    CHECK_INT(eval_on(q, running_vm), 1);
    CHECK_INT(eval_on(q, halted_template), 0);
}

TEST(test_and_binds_tighter_than_or)
{
    /* Read as true or (false and false); left to right would be false. */
    CHECK_INT(eval_on("true or false and false", running_vm), 1);
    /* Read as (false and true) or true. */
    CHECK_INT(eval_on("false and true or true", running_vm), 1);
    /* Parentheses override it. */
    CHECK_INT(eval_on("(true or false) and false", running_vm), 0);
    CHECK_INT(eval_on("field \"power_state\" = \"Halted\" or "
                      "field \"power_state\" = \"Running\" and "
                      "field \"is_a_template\" = \"false\"", running_vm), 1);
    CHECK_INT(eval_on("field \"power_state\" = \"Halted\" or "
                      "field \"power_state\" = \"Running\" and "
                      "field \"is_a_template\" = \"false\"",
                      halted_template), 1);
}

TEST(test_not_binds_tighter_than_and_and_or)
{
    /* (not true) or true, not not (true or true). */
    CHECK_INT(eval_on("not true or true", running_vm), 1);
    CHECK_INT(eval_on("not true and true", running_vm), 0);
    CHECK_INT(eval_on("not (true or true)", running_vm), 0);
    CHECK_INT(eval_on("not not true", running_vm), 1);
    CHECK_INT(eval_on("not field \"power_state\" = \"Running\"",
                      running_vm), 0);
}

TEST(test_true_and_false_constants)
{
    CHECK_INT(eval_on("true", running_vm), 1);
    CHECK_INT(eval_on("false", running_vm), 0);
    CHECK_INT(eval_on("((true))", running_vm), 1);
    CHECK_INT(eval_on("true and true and true and false", running_vm), 0);
    CHECK_INT(eval_on("false or false or false or true", running_vm), 1);
}

TEST(test_inequality_operators)
{
    CHECK_INT(eval_on("field \"power_state\" <> \"Halted\"", running_vm), 1);
    CHECK_INT(eval_on("field \"power_state\" != \"Halted\"", running_vm), 1);
    CHECK_INT(eval_on("field \"power_state\" <> \"Running\"", running_vm), 0);
    CHECK_INT(eval_on("\"a\" != \"a\"", running_vm), 0);
}

TEST(test_equality_is_exact_string_comparison)
{
    CHECK_INT(eval_on("field \"power_state\" = \"running\"", running_vm), 0);
    CHECK_INT(eval_on("field \"power_state\" = \"Running \"", running_vm), 0);
    CHECK_INT(eval_on("field \"power_state\" = \"Runnin\"", running_vm), 0);
    CHECK_INT(eval_on("field \"memory_static_max\" = \"4294967296\"",
                      running_vm), 1);
    CHECK_INT(eval_on("field \"memory_static_max\" = \"04294967296\"",
                      running_vm), 0);
    CHECK_INT(eval_on("field \"empty\" = \"\"", running_vm), 1);
    CHECK_INT(eval_on("\"\" = field \"empty\"", running_vm), 1);
}

TEST(test_operands_in_either_order_and_field_against_field)
{
    CHECK_INT(eval_on("\"Running\" = field \"power_state\"", running_vm), 1);
    CHECK_INT(eval_on("field \"name_label\" = field \"name_label\"",
                      running_vm), 1);
    CHECK_INT(eval_on("field \"power_state\" = field \"is_a_template\"",
                      running_vm), 0);
    CHECK_INT(eval_on("\"x\" = \"x\"", running_vm), 1);
}

TEST(test_escapes_in_strings)
{
    char *err;

    /* The name is: web "front" \ 1 */
    CHECK_INT(eval_on("field \"name_label\" = \"web \\\"front\\\" \\\\ 1\"",
                      running_vm), 1);
    err = parse_error("field \"name_label\" = \"web \\\"front\\\" \\ 1\"");
    CHECK(contains(err, "unknown escape '\\ ' at offset 36"));
    free(err);
    CHECK_INT(eval_on("\"\\\\\" = \"\\\\\"", running_vm), 1);
    CHECK_INT(eval_on("\"\\\"\" <> \"\\\\\"", running_vm), 1);
}

TEST(test_whitespace_is_free_form)
{
    CHECK_INT(eval_on("  field\"power_state\"=\"Running\"and(not false)\n",
                      running_vm), 1);
    CHECK_INT(eval_on("\tfield \"power_state\"\r\n<>\n\"Halted\"  ",
                      running_vm), 1);
}

TEST(test_unknown_field_is_enoent_with_the_name)
{
    struct query *q = NULL;
    struct row row = { .fields = running_vm };
    const char *missing = NULL;
    char *err = NULL;

    CHECK_INT(query_parse("field \"power_state\" = \"Running\" and "
                          "field \"no_such_field\" = \"x\"", &q, &err), 0);
    CHECK_INT(query_eval(q, row_get_field, &row, &missing), -ENOENT);
    CHECK_STR(missing, "no_such_field");
    query_free(q);
}

TEST(test_unknown_field_is_reported_whatever_the_row_values)
{
    struct query *q = NULL;
    struct row row = { .fields = halted_template };
    const char *missing = NULL;
    char *err = NULL;

    /* The left side is false for this row, so a short-circuiting
     * evaluator would never look at the bad field; the error must not
     * depend on that. */
    CHECK_INT(query_parse("field \"power_state\" = \"Running\" and "
                          "field \"bogus\" = \"x\"", &q, &err), 0);
    CHECK_INT(query_eval(q, row_get_field, &row, &missing), -ENOENT);
    CHECK_STR(missing, "bogus");
    query_free(q);

    missing = NULL;
    CHECK_INT(query_parse("true or \"x\" = field \"bogus2\"", &q, &err), 0);
    CHECK_INT(query_eval(q, row_get_field, &row, &missing), -ENOENT);
    CHECK_STR(missing, "bogus2");
    query_free(q);
}

TEST(test_query_can_be_evaluated_on_many_rows)
{
    const struct field *rows[] = { running_vm, halted_template, running_vm };
    struct query *q = NULL;
    char *err = NULL;
    int matches = 0;

    CHECK_INT(query_parse("field \"is_a_template\" = \"false\"", &q, &err), 0);
    for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
        struct row row = { .fields = rows[i] };

        matches += query_eval(q, row_get_field, &row, NULL);
        CHECK_INT(row.lookups, 1);
    }
    CHECK_INT(matches, 2);
    query_free(q);
}

TEST(test_empty_input_is_an_error)
{
    char *err;

    err = parse_error("");
    CHECK(contains(err, "empty query"));
    free(err);
    err = parse_error("   \n\t ");
    CHECK(contains(err, "empty query"));
    free(err);
}

TEST(test_syntax_errors_say_what_and_where)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        { "field power_state = \"Running\"",
          "expected a string after 'field' at offset 6, found "
          "'power_state'" },
        { "field", "expected a string after 'field' at offset 5, found the "
          "end of the query" },
        { "field \"a\"", "expected '=', '<>' or '!=' at offset 9, found the "
          "end of the query" },
        { "field \"a\" = ", "after the operator at offset 12, found the end "
          "of the query" },
        { "field \"a\" = Running", "after the operator at offset 12, found "
          "'Running'" },
        { "field \"a\" == \"b\"", "after the operator at offset 11, found "
          "'='" },
        { "field \"a\" < \"b\"", "unexpected '<' at offset 10" },
        { "field \"a\" ! \"b\"", "unexpected '!' at offset 10" },
        { "field \"a\" = \"b", "unterminated string starting at offset 12" },
        { "\"abc\\", "unterminated string starting at offset 0" },
        { "\"a\\nb\" = \"c\"", "unknown escape '\\n' at offset 2" },
        { "(true", "expected ')' to close the '(' at offset 0, found the end "
          "of the query at offset 5" },
        { "true)", "unexpected ')' at offset 4 after a complete condition" },
        { "true false", "unexpected 'false' at offset 5" },
        { "true and", "expected a condition" },
        { "and true", "expected a condition (field \"name\" = \"value\", not, "
          "'(', true or false) at offset 0, found 'and'" },
        { "TRUE", "found 'TRUE'" },
        { "field \"a\" = \"b\" AND true", "unexpected 'AND' at offset 16" },
        { "()", "expected a condition" },
        { "true # comment", "unexpected character '#' at offset 5" },
        { "\x01", "unexpected byte 0x01 at offset 0" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *err = parse_error(cases[i].text);

        CHECK(contains(err, cases[i].message));
        free(err);
    }
}

/* Builds "not not ... true" with n nots. */
static char *
nested_nots(int n)
{
    struct ds s = DS_EMPTY;

    for (int i = 0; i < n; i++) {
        ds_put_cstr(&s, "not ");
    }
    ds_put_cstr(&s, "true");
    return ds_steal(&s);
}

/* Builds "((( ... true ... )))" with n pairs. */
static char *
nested_parens(int n)
{
    struct ds s = DS_EMPTY;

    for (int i = 0; i < n; i++) {
        ds_put_char(&s, '(');
    }
    ds_put_cstr(&s, "true");
    for (int i = 0; i < n; i++) {
        ds_put_char(&s, ')');
    }
    return ds_steal(&s);
}

TEST(test_nesting_up_to_64_levels_is_accepted)
{
    char *text;

    text = nested_nots(64);
    CHECK_INT(eval_on(text, running_vm), 1);
    free(text);
    text = nested_nots(63);
    CHECK_INT(eval_on(text, running_vm), 0);
    free(text);
    text = nested_parens(64);
    CHECK_INT(eval_on(text, running_vm), 1);
    free(text);
}

TEST(test_nesting_deeper_than_64_levels_is_refused)
{
    char *text, *err;

    text = nested_nots(65);
    err = parse_error(text);
    CHECK(contains(err, "nested too deeply"));
    free(err);
    free(text);

    text = nested_parens(65);
    err = parse_error(text);
    CHECK(contains(err, "nested too deeply"));
    free(err);
    free(text);

    /* A hostile client's hundred thousand parentheses fail just the same,
     * and quickly. */
    text = nested_parens(30000);
    err = parse_error(text);
    CHECK(contains(err, "nested too deeply"));
    free(err);
    free(text);
}

TEST(test_long_flat_chains_are_not_nesting)
{
    struct ds s = DS_EMPTY;
    char *text;

    /* Thousands of "or"s are flat, not nested: the tree must not get
     * deep enough to matter to the evaluator's recursion. */
    for (int i = 0; i < 5000; i++) {
        ds_put_cstr(&s, "false or ");
    }
    ds_put_cstr(&s, "field \"power_state\" = \"Running\"");
    text = ds_steal(&s);
    CHECK(strlen(text) < 64 * 1024);
    CHECK_INT(eval_on(text, running_vm), 1);
    CHECK_INT(eval_on(text, halted_template), 0);
    free(text);
}

TEST(test_input_longer_than_64_kib_is_refused)
{
    size_t n = 64 * 1024 + 1;
    char *text = xmalloc(n + 1), *err;

    /* Valid in every other way: spaces around "true". */
    memset(text, ' ', n);
    memcpy(text, "true", 4);
    text[n] = '\0';
    err = parse_error(text);
    CHECK(contains(err, "longer than 65536 bytes"));
    free(err);

    /* Exactly 64 KiB is fine. */
    text[n - 1] = '\0';
    CHECK_INT(eval_on(text, running_vm), 1);
    free(text);
}

TEST(test_query_free_accepts_null)
{
    query_free(NULL);
}
