/* transport.c — libcurl transport for the SDK examples (transport.h).
 *
 * One curl handle per transport, so the connection is kept alive across
 * calls, as XenAPI clients should.  The response is handed to the SDK
 * piece by piece as curl receives it: the SDK collects and decodes it. */
#define _POSIX_C_SOURCE 200809L
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

struct example_transport {
    CURL *curl;
    struct curl_slist *headers;
};

/* What a curl write callback needs to feed the SDK. */
struct example_sink {
    xen_result_func func;
    void *handle;
};

static size_t
example_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct example_sink *sink = userdata;
    size_t n = size * nmemb;

    /* Returning less than n makes curl abort the transfer. */
    return sink->func(ptr, n, sink->handle) ? n : 0;
}

struct example_transport *
example_transport_open(const char *target)
{
    struct example_transport *t = NULL;
    bool is_url = strstr(target, "://") != NULL;

    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "curl_global_init failed\n");
        goto out;
    }
    t = calloc(1, sizeof *t);
    if (!t || !(t->curl = curl_easy_init())) {
        fprintf(stderr, "cannot set up libcurl\n");
        example_transport_close(t);
        t = NULL;
        goto out;
    }
    if (is_url) {
        curl_easy_setopt(t->curl, CURLOPT_URL, target);
    } else {
        /* The toolstack serves the same XML-RPC on its Unix socket; the
         * host part of the URL is then only the Host header. */
        curl_easy_setopt(t->curl, CURLOPT_UNIX_SOCKET_PATH, target);
        curl_easy_setopt(t->curl, CURLOPT_URL, "http://localhost/");
    }
    t->headers = curl_slist_append(NULL, "Content-Type: text/xml");
    curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(t->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, example_write);
    curl_easy_setopt(t->curl, CURLOPT_NOSIGNAL, 1L);
    /* XenServer hosts usually have self-signed certificates; an
     * application should pin the host's certificate instead. */
    if (getenv("XEN_EXAMPLE_INSECURE")) {
        curl_easy_setopt(t->curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(t->curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
out:
    return t;
}

void
example_transport_close(struct example_transport *t)
{
    if (!t) {
        return;
    }
    if (t->curl) {
        curl_easy_cleanup(t->curl);
    }
    curl_slist_free_all(t->headers);
    free(t);
    curl_global_cleanup();
}

int
example_call_func(const void *data, size_t len, void *user_handle,
                  void *result_handle, xen_result_func result_func)
{
    struct example_transport *t = user_handle;
    struct example_sink sink = { result_func, result_handle };
    long status = 0;
    CURLcode rc;

    curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(t->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
    curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, &sink);
    rc = curl_easy_perform(t->curl);
    if (rc != CURLE_OK) {
        fprintf(stderr, "HTTP request failed: %s\n", curl_easy_strerror(rc));
        return (int) rc;
    }
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        fprintf(stderr, "HTTP status %ld\n", status);
        return -1;
    }
    return 0;
}

void
example_print_error(const char *what, const xen_session *session)
{
    fprintf(stderr, "%s:", what);
    for (int i = 0; i < session->error_description_count; i++) {
        fprintf(stderr, " %s", session->error_description[i]);
    }
    fprintf(stderr, "\n");
}
