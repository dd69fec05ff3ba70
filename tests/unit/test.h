/* test.h — a tiny unit-test harness.  Each test is a function registered
 * with TEST(); CHECK() records a failure and continues.  Results are
 * printed TAP-style ("ok - name" / "not ok - name"), which
 * tests/run-tests.sh counts across all test programs.  A test that cannot
 * run on this machine calls SKIP("why"). */
#ifndef TEST_H
#define TEST_H 1

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
    const char *name;
    void (*fn)(void);
};

extern int test_failures_;
extern const char *test_skip_reason_;

#define TEST_MAX 512
extern struct test_case test_cases_[TEST_MAX];
extern int test_count_;

#define TEST(fn_)                                                         \
    static void fn_(void);                                                \
    __attribute__((constructor)) static void register_##fn_(void)         \
    {                                                                     \
        if (test_count_ < TEST_MAX) {                                     \
            test_cases_[test_count_].name = #fn_;                         \
            test_cases_[test_count_].fn = fn_;                            \
            test_count_++;                                                \
        }                                                                 \
    }                                                                     \
    static void fn_(void)

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__,     \
                    __LINE__, #cond);                                     \
            test_failures_++;                                             \
        }                                                                 \
    } while (0)

#define CHECK_STR(a, b)                                                   \
    do {                                                                  \
        const char *a_ = (a), *b_ = (b);                                  \
        if (!a_ || !b_ || strcmp(a_, b_)) {                               \
            fprintf(stderr, "  %s:%d: \"%s\" != \"%s\"\n", __FILE__,      \
                    __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)");    \
            test_failures_++;                                             \
        }                                                                 \
    } while (0)

#define CHECK_INT(a, b)                                                   \
    do {                                                                  \
        long long a_ = (long long) (a), b_ = (long long) (b);             \
        if (a_ != b_) {                                                   \
            fprintf(stderr, "  %s:%d: %s = %lld, expected %lld\n",        \
                    __FILE__, __LINE__, #a, a_, b_);                      \
            test_failures_++;                                             \
        }                                                                 \
    } while (0)

#define SKIP(why) do { test_skip_reason_ = (why); return; } while (0)

/* Define TEST_MAIN in exactly one file of each test program. */
#ifdef TEST_MAIN
int test_failures_;
const char *test_skip_reason_;
struct test_case test_cases_[TEST_MAX];
int test_count_;

int
main(int argc, char *argv[])
{
    int failed = 0;

    for (int i = 0; i < test_count_; i++) {
        if (argc > 1 && !strstr(test_cases_[i].name, argv[1])) {
            continue;
        }
        test_failures_ = 0;
        test_skip_reason_ = NULL;
        test_cases_[i].fn();
        if (test_skip_reason_) {
            printf("ok - %s # SKIP %s\n", test_cases_[i].name,
                   test_skip_reason_);
        } else if (test_failures_) {
            printf("not ok - %s\n", test_cases_[i].name);
            failed++;
        } else {
            printf("ok - %s\n", test_cases_[i].name);
        }
        fflush(stdout);
    }
    return failed ? 1 : 0;
}
#endif

#endif
