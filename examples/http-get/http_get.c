/*
 * http-get: a WASI 0.2 command component that fetches one URL through
 * wasi:http/outgoing-handler, the way a wasip2 program's HTTP client (JavaScript's fetch,
 * Rust's wstd, Python's componentize-py poll loop) makes a request.
 *
 *   http-get.wasm http://HOST[:PORT][/PATH]
 *       GETs the URL, prints "status N" and then the response body, and exits with 0.
 *
 * A failure prints "http-get: STEP: ERROR" on stderr (ERROR is the wasi:http error code's
 * number and name when it has one, such as 6 connection-refused) and exits with 1.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_get.h"

static const char *const ERROR_NAMES[] = {
    "dns-timeout", "dns-error", "destination-not-found", "destination-unavailable",
    "destination-ip-prohibited", "destination-ip-unroutable", "connection-refused",
    "connection-terminated", "connection-timeout",
};

static _Noreturn void fail(const char *step, const char *why) {
    fflush(stdout);
    fprintf(stderr, "http-get: %s: %s\n", step, why);
    fflush(stderr);
    wasi_cli_exit_exit_with_code(1);
    abort();
}

static _Noreturn void fail_code(const char *step, const wasi_http_types_error_code_t *code) {
    char why[64];
    size_t known = sizeof ERROR_NAMES / sizeof ERROR_NAMES[0];
    const char *name = code->tag < known ? ERROR_NAMES[code->tag] : "";
    snprintf(why, sizeof why, "%u %s", code->tag, name);
    fail(step, why);
}

/* Blocks until `pollable` is ready, then drops it. */
static void wait_for(wasi_io_poll_own_pollable_t pollable) {
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(pollable));
    wasi_io_poll_pollable_drop_own(pollable);
}

/* The request for `url` (http only: the scheme, authority and path are split here). */
static wasi_http_types_own_outgoing_request_t request_for(const char *url) {
    const char *prefix = "http://";
    if (strncmp(url, prefix, strlen(prefix)) != 0) {
        fail("url", "only http://HOST[:PORT][/PATH] is understood");
    }
    const char *authority = url + strlen(prefix);
    const char *path = strchr(authority, '/');
    size_t authority_len = path ? (size_t)(path - authority) : strlen(authority);
    if (authority_len == 0) {
        fail("url", "no host");
    }
    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t borrowed =
        wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_GET};
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    http_get_string_t authority_text;
    http_get_string_dup_n(&authority_text, authority, authority_len);
    http_get_string_t path_text;
    http_get_string_set(&path_text, path ? path : "/");
    if (!wasi_http_types_method_outgoing_request_set_method(borrowed, &method) ||
        !wasi_http_types_method_outgoing_request_set_scheme(borrowed, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(borrowed, &authority_text) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(borrowed, &path_text)) {
        fail("request", "the URL was refused");
    }
    http_get_string_free(&authority_text);
    return request;
}

/* Copies the body of `response` to stdout. */
static void print_body(wasi_http_types_borrow_incoming_response_t response) {
    wasi_http_types_own_incoming_body_t body;
    if (!wasi_http_types_method_incoming_response_consume(response, &body)) {
        fail("body", "consumed twice");
    }
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                     &stream)) {
        fail("body", "no stream");
    }
    for (;;) {
        http_get_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(
                wasi_io_streams_borrow_input_stream(stream), 65536, &chunk, &err)) {
            if (err.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
                fail("body", "the stream failed");
            }
            break;
        }
        fwrite(chunk.ptr, 1, chunk.len, stdout);
        http_get_list_u8_free(&chunk);
    }
    fflush(stdout);
    /* The stream is the body's child: it goes first. */
    wasi_io_streams_input_stream_drop_own(stream);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: http-get http://HOST[:PORT][/PATH]\n");
        return 2;
    }
    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    wasi_http_outgoing_handler_error_code_t err;
    if (!wasi_http_outgoing_handler_handle(request_for(argv[1]), NULL, &future, &err)) {
        fail_code("request", &err);
    }
    wasi_http_types_borrow_future_incoming_response_t borrowed =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    while (!wasi_http_types_method_future_incoming_response_get(borrowed, &got)) {
        wait_for(wasi_http_types_method_future_incoming_response_subscribe(borrowed));
    }
    if (got.is_err) {
        fail("response", "taken twice");
    }
    if (got.val.ok.is_err) {
        fail_code("response", &got.val.ok.val.err);
    }
    wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t response_ref =
        wasi_http_types_borrow_incoming_response(response);
    printf("status %u\n", wasi_http_types_method_incoming_response_status(response_ref));
    print_body(response_ref);
    wasi_http_types_incoming_response_drop_own(response);
    wasi_http_types_future_incoming_response_drop_own(future);
    return 0;
}
