/* transport.h — the xen_call_func the SDK examples give the SDK: XML-RPC
 * over HTTP(S) with libcurl, or over the toolstack's Unix socket.  The SDK
 * leaves the transport to the application, so a real program may use any
 * HTTP library; this is a small, complete one to start from. */
#ifndef EXAMPLE_TRANSPORT_H
#define EXAMPLE_TRANSPORT_H 1

#include <xen/api/xen_common.h>

struct example_transport;

/* target: an http:// or https:// URL, or the path of the toolstack's Unix
 * socket.  Returns NULL (with a message on stderr) on failure. */
struct example_transport *example_transport_open(const char *target);
void example_transport_close(struct example_transport *t);   /* NULL ok */

/* The xen_call_func; its user_handle is the struct example_transport. */
int example_call_func(const void *data, size_t len, void *user_handle,
                      void *result_handle, xen_result_func result_func);

/* Prints the session's error to stderr as "what: CODE param...". */
void example_print_error(const char *what, const xen_session *session);

#endif
