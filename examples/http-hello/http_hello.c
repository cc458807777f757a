/*
 * http-hello: a WASI 0.2 HTTP handler component (world wasi:http/proxy@0.2.12, exporting
 * wasi:http/incoming-handler) written in C against the bindings that
 * `wasm-component bindings` generates (proxy.h). The shim's HTTP tests depend on these routes
 * exactly:
 *
 *   GET  /                  200 text/plain "hello from wasm\n"
 *   POST /echo              200 application/octet-stream, the request body byte for byte
 *   GET  /slow?ms=N         sleeps N ms on a monotonic-clock pollable, 200 "slept N ms\n"
 *   GET  /fetch?url=URL     outgoing GET of http://HOST:PORT/PATH, 200 "upstream STATUS: BODY"
 *                           or 502 "fetch failed: REASON\n"
 *   GET  /trap              traps before any response is set
 *   anything else           404 "not found\n"
 *
 * Every request first prints "METHOD PATH?QUERY" on stdout, so it shows in container logs.
 *
 * Handles are resources owned by the host's table for as long as the instance lives, and the
 * generated *_free functions release only guest memory, never handles: each own handle below
 * is dropped (or moved into a call that takes it) explicitly, so a long-lived instance does not
 * grow its resource table request after request.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

/* blocking-write-and-flush accepts at most 4096 bytes per call. */
#define WRITE_CHUNK 4096
/* Upper bound of one blocking-read; the stream may return less. */
#define READ_CHUNK 65536
/* Longest accepted /slow delay, in decimal digits of milliseconds (< 11.6 days), so the
 * nanosecond duration cannot overflow. */
#define MAX_MS_DIGITS 9

typedef wasi_http_types_own_response_outparam_t response_out_t;

/* A growable byte buffer for bodies and messages. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} buffer_t;

static bool buffer_append(buffer_t *b, const void *data, size_t len) {
    if (len == 0) {
        return true;
    }
    if (b->cap - b->len < len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < len) {
            if (cap > SIZE_MAX / 2) {
                return false;
            }
            cap *= 2;
        }
        uint8_t *grown = realloc(b->data, cap);
        if (grown == NULL) {
            return false;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

static bool buffer_append_str(buffer_t *b, const char *s) {
    return buffer_append(b, s, strlen(s));
}

static void buffer_free(buffer_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* The WIT names of wasi:http/types.error-code, indexed by the variant's tag, so a failed fetch
 * says which case the host reported. */
static const char *const ERROR_CODE_NAMES[] = {
    "DNS-timeout",
    "DNS-error",
    "destination-not-found",
    "destination-unavailable",
    "destination-IP-prohibited",
    "destination-IP-unroutable",
    "connection-refused",
    "connection-terminated",
    "connection-timeout",
    "connection-read-timeout",
    "connection-write-timeout",
    "connection-limit-reached",
    "TLS-protocol-error",
    "TLS-certificate-error",
    "TLS-alert-received",
    "HTTP-request-denied",
    "HTTP-request-length-required",
    "HTTP-request-body-size",
    "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid",
    "HTTP-request-URI-too-long",
    "HTTP-request-header-section-size",
    "HTTP-request-header-size",
    "HTTP-request-trailer-section-size",
    "HTTP-request-trailer-size",
    "HTTP-response-incomplete",
    "HTTP-response-header-section-size",
    "HTTP-response-header-size",
    "HTTP-response-body-size",
    "HTTP-response-trailer-section-size",
    "HTTP-response-trailer-size",
    "HTTP-response-transfer-coding",
    "HTTP-response-content-coding",
    "HTTP-response-timeout",
    "HTTP-upgrade-failed",
    "HTTP-protocol-error",
    "loop-detected",
    "configuration-error",
    "internal-error",
};

/* Appends the error's variant name and, for the cases that carry one, its text. */
static void describe_error_code(buffer_t *out, const wasi_http_types_error_code_t *code) {
    size_t count = sizeof(ERROR_CODE_NAMES) / sizeof(ERROR_CODE_NAMES[0]);
    buffer_append_str(out, code->tag < count ? ERROR_CODE_NAMES[code->tag] : "unknown-error");
    const proxy_option_string_t *detail = NULL;
    if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR) {
        detail = &code->val.internal_error;
    } else if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_DNS_ERROR) {
        detail = &code->val.dns_error.rcode;
    }
    if (detail != NULL && detail->is_some) {
        buffer_append_str(out, ": ");
        buffer_append(out, detail->val.ptr, detail->val.len);
    }
}

/* Describes a stream's failure, then drops the error resource. The host attaches an HTTP
 * error code to failures of HTTP body streams; other failures only have debug text. */
static void describe_stream_error(buffer_t *out, wasi_io_error_own_error_t error) {
    wasi_io_error_borrow_error_t borrowed = wasi_io_error_borrow_error(error);
    wasi_http_types_error_code_t code;
    if (wasi_http_types_http_error_code(borrowed, &code)) {
        describe_error_code(out, &code);
        wasi_http_types_error_code_free(&code);
    } else {
        proxy_string_t text;
        wasi_io_error_method_error_to_debug_string(borrowed, &text);
        buffer_append(out, text.ptr, text.len);
        proxy_string_free(&text);
    }
    wasi_io_error_error_drop_own(error);
}

/* Reads a stream until the host closes it. On failure, `error` gets the reason. */
static bool read_to_end(wasi_io_streams_borrow_input_stream_t stream, buffer_t *out,
                        buffer_t *error) {
    for (;;) {
        proxy_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(stream, READ_CHUNK, &chunk, &err)) {
            if (err.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
                return true;
            }
            describe_stream_error(error, err.val.last_operation_failed);
            return false;
        }
        bool stored = buffer_append(out, chunk.ptr, chunk.len);
        proxy_list_u8_free(&chunk);
        if (!stored) {
            buffer_append_str(error, "out of memory");
            return false;
        }
    }
}

/* Reads a whole incoming body (of a request or of a response), then finishes it. */
static bool read_body(wasi_http_types_own_incoming_body_t body, buffer_t *out, buffer_t *error) {
    bool ok = false;
    wasi_http_types_own_input_stream_t stream;
    if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                    &stream)) {
        ok = read_to_end(wasi_io_streams_borrow_input_stream(stream), out, error);
        /* The stream is a child of the body: the host refuses to finish a body whose stream
         * is still alive. */
        wasi_io_streams_input_stream_drop_own(stream);
    } else {
        buffer_append_str(error, "body stream already taken");
    }
    /* Trailers are not used; the future only has to be released. */
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
    return ok;
}

/* Writes everything, in chunks blocking-write-and-flush accepts. Stops quietly when the
 * client has gone: there is nobody left to report the error to. */
static void write_all(wasi_io_streams_borrow_output_stream_t stream, const uint8_t *data,
                      size_t len) {
    while (len > 0) {
        size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        proxy_list_u8_t chunk = {(uint8_t *)data, n};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(stream, &chunk, &err)) {
            if (err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
                wasi_io_error_error_drop_own(err.val.last_operation_failed);
            }
            return;
        }
        data += n;
        len -= n;
    }
}

/* Sends a complete response. The response is handed to the host before the body is written,
 * as wasi:http requires for streaming: the host only starts sending (and draining the body
 * pipe) once response-outparam.set has been called. */
static void respond(response_out_t out, uint16_t status, const char *content_type,
                    const uint8_t *data, size_t len) {
    wasi_http_types_tuple2_field_name_field_value_t header;
    proxy_string_set(&header.f0, "content-type");
    header.f1.ptr = (uint8_t *)content_type;
    header.f1.len = strlen(content_type);
    wasi_http_types_list_tuple2_field_name_field_value_t list = {&header, 1};
    wasi_http_types_own_fields_t headers;
    wasi_http_types_header_error_t header_error;
    if (!wasi_http_types_static_fields_from_list(&list, &headers, &header_error)) {
        headers = wasi_http_types_constructor_fields();
    }

    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t borrowed =
        wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
    wasi_http_types_own_outgoing_body_t body;
    bool has_body = wasi_http_types_method_outgoing_response_body(borrowed, &body);

    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);
    if (!has_body) {
        return;
    }

    wasi_http_types_own_output_stream_t stream;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                   &stream)) {
        write_all(wasi_io_streams_borrow_output_stream(stream), data, len);
        /* A child of the body, like the incoming one: dropped before the body is finished. */
        wasi_io_streams_output_stream_drop_own(stream);
    }
    wasi_http_types_error_code_t finish_error;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_error)) {
        wasi_http_types_error_code_free(&finish_error);
    }
}

static void respond_text(response_out_t out, uint16_t status, const char *text) {
    respond(out, status, "text/plain", (const uint8_t *)text, strlen(text));
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decodes %XX escapes in place, so a URL can be passed percent-encoded in a query. A '%' not
 * followed by two hex digits stays as it is. */
static void percent_decode(char *s) {
    char *to = s;
    for (const char *from = s; *from != '\0'; from++) {
        int high = from[0] == '%' ? hex_value(from[1]) : -1;
        int low = high >= 0 ? hex_value(from[2]) : -1;
        if (low >= 0) {
            *to++ = (char)(high * 16 + low);
            from += 2;
        } else {
            *to++ = *from;
        }
    }
    *to = '\0';
}

/* The value of `name` in a query string, or NULL. `rest_of_query` makes the value run to the
 * end of the query instead of the next '&', for values that are themselves URLs with their
 * own query. The query is modified in place. */
static char *query_param(char *query, const char *name, bool rest_of_query) {
    size_t name_len = strlen(name);
    for (char *param = query; param != NULL && *param != '\0';) {
        char *next = strchr(param, '&');
        if (strncmp(param, name, name_len) == 0 && param[name_len] == '=') {
            if (next != NULL && !rest_of_query) {
                *next = '\0';
            }
            return param + name_len + 1;
        }
        param = next != NULL ? next + 1 : NULL;
    }
    return NULL;
}

/* POST /echo. The whole request body is read before the response starts, rather than echoed
 * chunk by chunk: a client that sends its entire body before reading (most do) would
 * otherwise deadlock with this handler once both directions' socket buffers fill up. */
static void handle_echo(wasi_http_types_borrow_incoming_request_t request, response_out_t out) {
    buffer_t body = {0};
    buffer_t error = {0};
    wasi_http_types_own_incoming_body_t incoming;
    if (!wasi_http_types_method_incoming_request_consume(request, &incoming)) {
        respond_text(out, 500, "request body already consumed\n");
        return;
    }
    if (read_body(incoming, &body, &error)) {
        respond(out, 200, "application/octet-stream", body.data, body.len);
    } else {
        buffer_t message = {0};
        buffer_append_str(&message, "reading the request body failed: ");
        buffer_append(&message, error.data, error.len);
        buffer_append_str(&message, "\n");
        respond(out, 400, "text/plain", message.data, message.len);
        buffer_free(&message);
    }
    buffer_free(&body);
    buffer_free(&error);
}

/* GET /slow?ms=N. Blocks on a clock pollable, so the host's thread (and the CPU) is free
 * while the request waits. */
static void handle_slow(char *query, response_out_t out) {
    const char *ms_text = query_param(query, "ms", false);
    size_t digits = ms_text != NULL ? strspn(ms_text, "0123456789") : 0;
    if (digits == 0 || digits > MAX_MS_DIGITS || ms_text[digits] != '\0') {
        respond_text(out, 400, "ms must be a number of milliseconds\n");
        return;
    }
    uint64_t ms = strtoull(ms_text, NULL, 10);
    wasi_clocks_monotonic_clock_own_pollable_t timer =
        wasi_clocks_monotonic_clock_subscribe_duration(ms * 1000000u);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(timer));
    wasi_io_poll_pollable_drop_own(timer);

    char message[64];
    snprintf(message, sizeof(message), "slept %llu ms\n", (unsigned long long)ms);
    respond_text(out, 200, message);
}

static void fetch_failed(response_out_t out, const buffer_t *reason) {
    buffer_t message = {0};
    buffer_append_str(&message, "fetch failed: ");
    buffer_append(&message, reason->data, reason->len);
    buffer_append_str(&message, "\n");
    respond(out, 502, "text/plain", message.data, message.len);
    buffer_free(&message);
}

/* Sends a GET for http://AUTHORITY/PATH and waits for its response. Returns the response,
 * or false with the reason in `error`. */
static bool send_get(const char *url, wasi_http_types_own_incoming_response_t *response,
                     buffer_t *error) {
    static const char prefix[] = "http://";
    if (strncmp(url, prefix, sizeof(prefix) - 1) != 0) {
        buffer_append_str(error, "only http://HOST:PORT/PATH URLs are supported");
        return false;
    }
    const char *authority = url + sizeof(prefix) - 1;
    const char *path = strchr(authority, '/');
    size_t authority_len = path != NULL ? (size_t)(path - authority) : strlen(authority);
    if (authority_len == 0) {
        buffer_append_str(error, "the URL has no host");
        return false;
    }

    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t borrowed =
        wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    proxy_string_t authority_str = {(uint8_t *)authority, authority_len};
    proxy_string_t path_str;
    proxy_string_set(&path_str, path != NULL ? path : "/");
    if (!wasi_http_types_method_outgoing_request_set_scheme(borrowed, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(borrowed, &authority_str) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(borrowed, &path_str)) {
        wasi_http_types_outgoing_request_drop_own(request);
        buffer_append_str(error, "invalid URL");
        return false;
    }

    /* The request moves into handle(), whatever its outcome. */
    wasi_http_types_own_future_incoming_response_t future;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
        describe_error_code(error, &code);
        wasi_http_types_error_code_free(&code);
        return false;
    }
    wasi_http_types_borrow_future_incoming_response_t borrowed_future =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_own_pollable_t ready =
        wasi_http_types_method_future_incoming_response_subscribe(borrowed_future);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);

    wasi_http_types_result_result_own_incoming_response_error_code_void_t outcome;
    bool done = wasi_http_types_method_future_incoming_response_get(borrowed_future, &outcome);
    wasi_http_types_future_incoming_response_drop_own(future);
    if (!done || outcome.is_err) {
        /* Neither can happen after the pollable is ready and before anyone else took it. */
        buffer_append_str(error, "no response from the host");
        return false;
    }
    if (outcome.val.ok.is_err) {
        describe_error_code(error, &outcome.val.ok.val.err);
        wasi_http_types_error_code_free(&outcome.val.ok.val.err);
        return false;
    }
    *response = outcome.val.ok.val.ok;
    return true;
}

/* GET /fetch?url=http://HOST:PORT/PATH. The url parameter must come last (it runs to the end
 * of the query, so the upstream path may carry its own query) and may be percent-encoded. */
static void handle_fetch(char *query, response_out_t out) {
    buffer_t error = {0};
    char *url = query_param(query, "url", true);
    if (url == NULL) {
        buffer_append_str(&error, "no url parameter");
        fetch_failed(out, &error);
        buffer_free(&error);
        return;
    }
    percent_decode(url);

    wasi_http_types_own_incoming_response_t response;
    if (!send_get(url, &response, &error)) {
        fetch_failed(out, &error);
        buffer_free(&error);
        return;
    }
    wasi_http_types_borrow_incoming_response_t borrowed =
        wasi_http_types_borrow_incoming_response(response);
    char status_line[32];
    snprintf(status_line, sizeof(status_line), "upstream %u: ",
             (unsigned)wasi_http_types_method_incoming_response_status(borrowed));
    buffer_t message = {0};
    buffer_append_str(&message, status_line);
    wasi_http_types_own_incoming_body_t body;
    bool ok;
    if (wasi_http_types_method_incoming_response_consume(borrowed, &body)) {
        ok = read_body(body, &message, &error);
    } else {
        ok = false;
        buffer_append_str(&error, "response body already consumed");
    }
    /* After its body: the body is the response's child. */
    wasi_http_types_incoming_response_drop_own(response);

    if (ok) {
        respond(out, 200, "text/plain", message.data, message.len);
    } else {
        fetch_failed(out, &error);
    }
    buffer_free(&message);
    buffer_free(&error);
}

static void print_request_line(const wasi_http_types_method_t *method, const char *target) {
    static const char *const names[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                        "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    if (method->tag == WASI_HTTP_TYPES_METHOD_OTHER) {
        printf("%.*s %s\n", (int)method->val.other.len, (const char *)method->val.other.ptr,
               target);
    } else if (method->tag < sizeof(names) / sizeof(names[0])) {
        printf("%s %s\n", names[method->tag], target);
    }
    /* stdout is a pipe to the shim, so it is fully buffered: without the flush the line would
     * only appear once the buffer fills. */
    fflush(stdout);
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t out) {
    wasi_http_types_borrow_incoming_request_t borrowed =
        wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(borrowed, &method);
    proxy_string_t path_with_query;
    char *target;
    if (wasi_http_types_method_incoming_request_path_with_query(borrowed, &path_with_query)) {
        target = strndup((const char *)path_with_query.ptr, path_with_query.len);
        proxy_string_free(&path_with_query);
    } else {
        target = strdup("/");
    }
    if (target == NULL) {
        __builtin_trap();
    }
    print_request_line(&method, target);

    char *query = strchr(target, '?');
    if (query != NULL) {
        *query++ = '\0';
    } else {
        query = target + strlen(target);
    }
    bool get = method.tag == WASI_HTTP_TYPES_METHOD_GET;
    if (get && strcmp(target, "/") == 0) {
        respond_text(out, 200, "hello from wasm\n");
    } else if (method.tag == WASI_HTTP_TYPES_METHOD_POST && strcmp(target, "/echo") == 0) {
        handle_echo(borrowed, out);
    } else if (get && strcmp(target, "/slow") == 0) {
        handle_slow(query, out);
    } else if (get && strcmp(target, "/fetch") == 0) {
        handle_fetch(query, out);
    } else if (get && strcmp(target, "/trap") == 0) {
        __builtin_trap();
    } else {
        respond_text(out, 404, "not found\n");
    }

    free(target);
    wasi_http_types_method_free(&method);
    wasi_http_types_incoming_request_drop_own(request);
}
