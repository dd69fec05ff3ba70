/* xen_common.h — the session and transport of the C SDK (libxenserver).
 *
 * Everything else in xen/api/ is generated from the datamodel by
 * idl/gen-c-sdk.py: xen_types.h holds the handle, enum, set, map and record
 * types, xen_<class>.h the functions of one class, xen_all.h includes them
 * all.  This header is hand-written; it declares what every generated
 * function takes first, the xen_session, and the callback through which
 * the application carries requests to the server.
 *
 * Conventions (the shape of XenServer's C SDK):
 *   - every API call returns bool (session->ok) and writes its result, if
 *     any, through its second parameter, which the caller then owns and
 *     frees with the matching xen_*_free function (all accept NULL);
 *   - a failed call leaves session->ok false and the XenAPI error code and
 *     its parameters in session->error_description; further calls on the
 *     session fail at once until xen_session_clear_error() is called;
 *   - a session must not be used by two threads at the same time. */
#ifndef XEN_COMMON_H
#define XEN_COMMON_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A field or parameter named "class" is spelt XEN_CLAZZ, so that the
 * headers also compile as C++. */
#ifndef XEN_CLAZZ
#ifdef __cplusplus
#define XEN_CLAZZ clazz
#else
#define XEN_CLAZZ class
#endif
#endif

/* Receives (part of) the server's response; returns false to abort. */
typedef bool (*xen_result_func)(const void *data, size_t len,
                                void *result_handle);

/* Supplied by the application: sends the XML-RPC request (len bytes, not
 * counting the terminating NUL that data also has) to the server, and
 * passes the body of the response, in as many pieces as it likes, to
 * result_func(piece, piece_len, result_handle).  Returns 0 on success,
 * anything else when the exchange failed. */
typedef int (*xen_call_func)(const void *data, size_t len, void *user_handle,
                             void *result_handle, xen_result_func result_func);

/* API versions a client may announce at login. */
typedef enum xen_api_version {
    xen_api_version_1_1,
    xen_api_version_1_2,
    xen_api_version_2_0,
    xen_api_version_2_1,
    xen_api_version_2_2,
    xen_api_version_2_3,
    xen_api_version_2_4,
    xen_api_version_2_5,
    xen_api_version_2_6,
    xen_api_version_2_7,
    xen_api_version_2_8,
    xen_api_version_2_9,
    xen_api_version_2_10,
    xen_api_version_2_11,
    xen_api_version_2_12,
    xen_api_version_2_13,
    xen_api_version_2_14,
    xen_api_version_2_15,
    xen_api_version_2_16,
    xen_api_version_2_20,
    xen_api_version_2_21,
    xen_api_latest_version = xen_api_version_2_21,
    xen_api_unknown_version,
} xen_api_version;

/* "2.21" for xen_api_version_2_21; "" for an unknown version. */
extern const char *xen_api_version_to_string(xen_api_version version);

typedef struct {
    xen_call_func call_func;
    void *handle;                   /* the application's user_handle */
    const char *session_id;         /* the session's opaque reference */
    bool ok;                        /* false after a failed call */
    char **error_description;       /* [code, params...] after a failure */
    int error_description_count;
    xen_api_version api_version;
} xen_session;

/* Nothing to set up or tear down; kept because XenServer's applications
 * call them. */
extern void xen_init(void);
extern void xen_fini(void);

/* Logs in (session.login_with_password).  Returns a session whose ok
 * member says whether it worked; on failure the session holds the error
 * and is still to be freed with xen_session_logout().  NULL only if
 * call_func is NULL. */
extern xen_session *
xen_session_login_with_password(xen_call_func call_func, void *handle,
                                const char *uname, const char *pwd,
                                xen_api_version version);

/* Logs in to this very host in emergency mode
 * (session.slave_local_login_with_password). */
extern xen_session *
xen_session_slave_local_login_with_password(xen_call_func call_func,
                                            void *handle, const char *uname,
                                            const char *pwd);

/* Logs out (if logged in) and frees the session.  Accepts NULL.  A
 * failure to log out is not reported: the session is gone either way. */
extern void xen_session_logout(xen_session *session);

/* The same for sessions from slave_local_login (session.local_logout). */
extern void xen_session_local_logout(xen_session *session);

/* Forgets the error of the last failed call, so the session can be used
 * again. */
extern void xen_session_clear_error(xen_session *session);

#ifdef __cplusplus
}
#endif

#endif
