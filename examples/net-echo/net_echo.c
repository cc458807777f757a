/*
 * net-echo: a WASI 0.2 command component that serves or calls an echo over TCP or UDP
 * through wasi:sockets, the way a network program built for wasip2 (Rust's std::net, Go's
 * net, Python's socket) reaches the network.
 *
 *   net-echo.wasm serve PORT [COUNT]
 *       Listens on TCP 0.0.0.0:PORT, prints "listening on PORT", then answers COUNT
 *       connections (forever if COUNT is absent or 0): reads one line and writes back
 *       "echo: LINE".
 *   net-echo.wasm connect HOST PORT MESSAGE
 *       Resolves HOST by name (wasi:sockets/ip-name-lookup), connects to the first address
 *       over TCP, sends MESSAGE and a newline and prints the line that comes back.
 *   net-echo.wasm udp-serve PORT [COUNT]
 *       Binds UDP 0.0.0.0:PORT, prints "bound to PORT", then answers COUNT datagrams
 *       (forever if COUNT is absent or 0) with one datagram "echo: DATA" to their sender.
 *   net-echo.wasm udp-send HOST PORT MESSAGE
 *       Resolves HOST, sends MESSAGE as one datagram to the first address and prints the
 *       datagram that comes back within 10 s (and from which port it came:
 *       "PAYLOAD (from port N)"); none is a failure ("receive: timeout").
 *
 * A failure prints "net-echo: STEP: ERROR" on stderr (ERROR is the wasi:sockets error code's
 * name, such as access-denied) and exits with 1.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_echo.h"

typedef wasi_sockets_network_error_code_t error_code_t;
typedef wasi_sockets_tcp_own_tcp_socket_t socket_t;
typedef wasi_sockets_tcp_borrow_network_t network_t;
typedef wasi_sockets_network_ip_socket_address_t socket_address_t;
typedef wasi_sockets_udp_own_udp_socket_t udp_socket_t;

/* How long udp-send waits for the answer. */
#define UDP_ANSWER_WAIT_NS (10ull * 1000 * 1000 * 1000)

static const char *const ERROR_NAMES[] = {
    "unknown", "access-denied", "not-supported", "invalid-argument", "out-of-memory",
    "timeout", "concurrency-conflict", "not-in-progress", "would-block", "invalid-state",
    "new-socket-limit", "address-not-bindable", "address-in-use", "remote-unreachable",
    "connection-refused", "connection-reset", "connection-aborted", "datagram-too-large",
    "name-unresolvable", "temporary-resolver-failure", "permanent-resolver-failure",
};

static _Noreturn void fail(const char *step, error_code_t code) {
    const char *name = code < sizeof ERROR_NAMES / sizeof ERROR_NAMES[0] ? ERROR_NAMES[code] : "?";
    fflush(stdout);
    fprintf(stderr, "net-echo: %s: %s\n", step, name);
    fflush(stderr);
    wasi_cli_exit_exit_with_code(1);
    abort();
}

static _Noreturn void usage(void) {
    fprintf(stderr, "usage: net-echo serve|udp-serve PORT [COUNT]"
                    " | net-echo connect|udp-send HOST PORT MESSAGE\n");
    fflush(stderr);
    wasi_cli_exit_exit_with_code(2);
    abort();
}

/* Blocks until `pollable` is ready, then drops it. */
static void wait_for(wasi_io_poll_own_pollable_t pollable) {
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(pollable));
    wasi_io_poll_pollable_drop_own(pollable);
}

/* Blocks until the socket's pending operation may have progressed. */
static void wait_on_socket(socket_t socket) {
    wait_for(wasi_sockets_tcp_method_tcp_socket_subscribe(wasi_sockets_tcp_borrow_tcp_socket(socket)));
}

static uint16_t parse_port(const char *text) {
    char *end;
    long port = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || port < 0 || port > 65535) {
        usage();
    }
    return (uint16_t)port;
}

/* A line from `in` (up to the newline or the end of the stream), at most `size - 1` bytes. */
static size_t read_line(wasi_io_streams_own_input_stream_t in, char *line, size_t size) {
    size_t len = 0;
    while (len + 1 < size) {
        net_echo_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(
                wasi_io_streams_borrow_input_stream(in), 1, &chunk, &err)) {
            break; /* closed, or failed: what arrived so far is the line */
        }
        bool newline = chunk.len == 1 && chunk.ptr[0] == '\n';
        if (chunk.len == 1 && !newline) {
            line[len++] = (char)chunk.ptr[0];
        }
        net_echo_list_u8_free(&chunk);
        if (newline) {
            break;
        }
    }
    line[len] = '\0';
    return len;
}

static bool write_all(wasi_io_streams_own_output_stream_t out, const char *text) {
    net_echo_list_u8_t bytes = {.ptr = (uint8_t *)text, .len = strlen(text)};
    wasi_io_streams_stream_error_t err;
    return wasi_io_streams_method_output_stream_blocking_write_and_flush(
        wasi_io_streams_borrow_output_stream(out), &bytes, &err);
}

static void serve(network_t network, uint16_t port, unsigned long count) {
    socket_t listener;
    error_code_t err;
    if (!wasi_sockets_tcp_create_socket_create_tcp_socket(WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4,
                                                          &listener, &err)) {
        fail("create socket", err);
    }
    wasi_sockets_tcp_borrow_tcp_socket_t sock = wasi_sockets_tcp_borrow_tcp_socket(listener);
    wasi_sockets_tcp_ip_socket_address_t any = {
        .tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4,
        .val.ipv4 = {.port = port, .address = {0, 0, 0, 0}},
    };
    if (!wasi_sockets_tcp_method_tcp_socket_start_bind(sock, network, &any, &err)) {
        fail("bind", err);
    }
    while (!wasi_sockets_tcp_method_tcp_socket_finish_bind(sock, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            fail("bind", err);
        }
        wait_on_socket(listener);
    }
    if (!wasi_sockets_tcp_method_tcp_socket_start_listen(sock, &err)) {
        fail("listen", err);
    }
    while (!wasi_sockets_tcp_method_tcp_socket_finish_listen(sock, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            fail("listen", err);
        }
        wait_on_socket(listener);
    }
    printf("listening on %u\n", port);
    fflush(stdout);
    for (unsigned long served = 0; count == 0 || served < count;) {
        wasi_sockets_tcp_tuple3_own_tcp_socket_own_input_stream_own_output_stream_t conn;
        if (!wasi_sockets_tcp_method_tcp_socket_accept(sock, &conn, &err)) {
            if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
                fail("accept", err);
            }
            wait_on_socket(listener);
            continue;
        }
        char line[1024];
        char reply[1040];
        read_line(conn.f1, line, sizeof line);
        snprintf(reply, sizeof reply, "echo: %s\n", line);
        write_all(conn.f2, reply);
        /* A socket's streams are its children: they go first. */
        wasi_io_streams_input_stream_drop_own(conn.f1);
        wasi_io_streams_output_stream_drop_own(conn.f2);
        wasi_sockets_tcp_tcp_socket_drop_own(conn.f0);
        served++;
    }
    wasi_sockets_tcp_tcp_socket_drop_own(listener);
}

/* The first address `host` resolves to. */
static wasi_sockets_network_ip_address_t resolve(network_t network, const char *host) {
    net_echo_string_t name;
    net_echo_string_set(&name, host);
    wasi_sockets_ip_name_lookup_own_resolve_address_stream_t stream;
    error_code_t err;
    if (!wasi_sockets_ip_name_lookup_resolve_addresses(network, &name, &stream, &err)) {
        fail("resolve", err);
    }
    wasi_sockets_ip_name_lookup_borrow_resolve_address_stream_t borrowed =
        wasi_sockets_ip_name_lookup_borrow_resolve_address_stream(stream);
    for (;;) {
        wasi_sockets_ip_name_lookup_option_ip_address_t next;
        if (wasi_sockets_ip_name_lookup_method_resolve_address_stream_resolve_next_address(
                borrowed, &next, &err)) {
            if (!next.is_some) {
                fail("resolve", WASI_SOCKETS_NETWORK_ERROR_CODE_NAME_UNRESOLVABLE);
            }
            wasi_sockets_ip_name_lookup_resolve_address_stream_drop_own(stream);
            return next.val;
        }
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            fail("resolve", err);
        }
        wait_for(wasi_sockets_ip_name_lookup_method_resolve_address_stream_subscribe(borrowed));
    }
}

/* `address` with `port`, and the family of sockets that reach it. */
static socket_address_t with_port(wasi_sockets_network_ip_address_t address, uint16_t port,
                                  wasi_sockets_network_ip_address_family_t *family) {
    socket_address_t remote;
    memset(&remote, 0, sizeof remote);
    if (address.tag == WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV4) {
        *family = WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4;
        remote.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4;
        remote.val.ipv4.port = port;
        remote.val.ipv4.address = address.val.ipv4;
    } else {
        *family = WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV6;
        remote.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV6;
        remote.val.ipv6.port = port;
        remote.val.ipv6.address = address.val.ipv6;
    }
    return remote;
}

static void call(network_t network, const char *host, uint16_t port, const char *message) {
    wasi_sockets_network_ip_address_family_t family;
    socket_address_t remote = with_port(resolve(network, host), port, &family);
    socket_t client;
    error_code_t err;
    if (!wasi_sockets_tcp_create_socket_create_tcp_socket(family, &client, &err)) {
        fail("create socket", err);
    }
    wasi_sockets_tcp_borrow_tcp_socket_t sock = wasi_sockets_tcp_borrow_tcp_socket(client);
    if (!wasi_sockets_tcp_method_tcp_socket_start_connect(sock, network, &remote, &err)) {
        fail("connect", err);
    }
    wasi_sockets_tcp_tuple2_own_input_stream_own_output_stream_t streams;
    while (!wasi_sockets_tcp_method_tcp_socket_finish_connect(sock, &streams, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            fail("connect", err);
        }
        wait_on_socket(client);
    }
    char request[1024];
    snprintf(request, sizeof request, "%s\n", message);
    if (!write_all(streams.f1, request)) {
        fail("send", WASI_SOCKETS_NETWORK_ERROR_CODE_CONNECTION_RESET);
    }
    char line[1040];
    read_line(streams.f0, line, sizeof line);
    printf("%s\n", line);
    fflush(stdout);
    wasi_io_streams_input_stream_drop_own(streams.f0);
    wasi_io_streams_output_stream_drop_own(streams.f1);
    wasi_sockets_tcp_tcp_socket_drop_own(client);
}

/* A UDP socket of `family` bound to its unspecified address and `port` (0: any). */
static udp_socket_t udp_bound(network_t network,
                              wasi_sockets_network_ip_address_family_t family, uint16_t port) {
    udp_socket_t socket;
    error_code_t err;
    if (!wasi_sockets_udp_create_socket_create_udp_socket(family, &socket, &err)) {
        fail("create socket", err);
    }
    socket_address_t local;
    memset(&local, 0, sizeof local);
    if (family == WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4) {
        local.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4;
        local.val.ipv4.port = port;
    } else {
        local.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV6;
        local.val.ipv6.port = port;
    }
    wasi_sockets_udp_borrow_udp_socket_t sock = wasi_sockets_udp_borrow_udp_socket(socket);
    if (!wasi_sockets_udp_method_udp_socket_start_bind(sock, network, &local, &err)) {
        fail("bind", err);
    }
    while (!wasi_sockets_udp_method_udp_socket_finish_bind(sock, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            fail("bind", err);
        }
        wait_for(wasi_sockets_udp_method_udp_socket_subscribe(sock));
    }
    return socket;
}

/* Blocks until the datagram stream `stream` may have a datagram, or (with `deadline`, a
 * monotonic-clock instant) until then: a datagram may be lost, and a client must not wait
 * for its answer forever. Returns whether the deadline passed. */
static bool wait_for_datagram(wasi_sockets_udp_borrow_incoming_datagram_stream_t stream,
                              const uint64_t *deadline) {
    wasi_io_poll_own_pollable_t ready =
        wasi_sockets_udp_method_incoming_datagram_stream_subscribe(stream);
    if (deadline == NULL) {
        wait_for(ready);
        return false;
    }
    wasi_io_poll_own_pollable_t timer = wasi_clocks_monotonic_clock_subscribe_instant(*deadline);
    wasi_io_poll_borrow_pollable_t both[2] = {wasi_io_poll_borrow_pollable(ready),
                                              wasi_io_poll_borrow_pollable(timer)};
    wasi_io_poll_list_borrow_pollable_t list = {.ptr = both, .len = 2};
    net_echo_list_u32_t which;
    wasi_io_poll_poll(&list, &which);
    bool timed_out = which.len == 1 && which.ptr[0] == 1;
    net_echo_list_u32_free(&which);
    wasi_io_poll_pollable_drop_own(ready);
    wasi_io_poll_pollable_drop_own(timer);
    return timed_out;
}

/* The next datagram of `in`, waiting for one (until `deadline`, when given). The caller
 * frees it. */
static wasi_sockets_udp_incoming_datagram_t receive_one(
    wasi_sockets_udp_own_incoming_datagram_stream_t in, const uint64_t *deadline) {
    wasi_sockets_udp_borrow_incoming_datagram_stream_t stream =
        wasi_sockets_udp_borrow_incoming_datagram_stream(in);
    for (;;) {
        wasi_sockets_udp_list_incoming_datagram_t got;
        error_code_t err;
        if (!wasi_sockets_udp_method_incoming_datagram_stream_receive(stream, 1, &got, &err)) {
            fail("receive", err);
        }
        if (got.len == 1) {
            wasi_sockets_udp_incoming_datagram_t datagram = got.ptr[0];
            free(got.ptr);
            return datagram;
        }
        wasi_sockets_udp_list_incoming_datagram_free(&got);
        if (wait_for_datagram(stream, deadline)) {
            fail("receive", WASI_SOCKETS_NETWORK_ERROR_CODE_TIMEOUT);
        }
    }
}

/* Sends `data` as one datagram to `to` (none: the stream's remote address). */
static void send_one(wasi_sockets_udp_own_outgoing_datagram_stream_t out, const uint8_t *data,
                     size_t len, const socket_address_t *to) {
    wasi_sockets_udp_borrow_outgoing_datagram_stream_t stream =
        wasi_sockets_udp_borrow_outgoing_datagram_stream(out);
    error_code_t err;
    uint64_t permitted = 0;
    /* check-send first: send may only take what it permits. */
    for (;;) {
        if (!wasi_sockets_udp_method_outgoing_datagram_stream_check_send(stream, &permitted,
                                                                         &err)) {
            fail("send", err);
        }
        if (permitted > 0) {
            break;
        }
        wait_for(wasi_sockets_udp_method_outgoing_datagram_stream_subscribe(stream));
    }
    wasi_sockets_udp_outgoing_datagram_t datagram = {
        .data = {.ptr = (uint8_t *)data, .len = len},
        .remote_address = {.is_some = to != NULL},
    };
    if (to != NULL) {
        datagram.remote_address.val = *to;
    }
    wasi_sockets_udp_list_outgoing_datagram_t list = {.ptr = &datagram, .len = 1};
    uint64_t sent = 0;
    if (!wasi_sockets_udp_method_outgoing_datagram_stream_send(stream, &list, &sent, &err)) {
        fail("send", err);
    }
    if (sent != 1) {
        fail("send", WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK);
    }
}

static void udp_serve(network_t network, uint16_t port, unsigned long count) {
    udp_socket_t socket = udp_bound(network, WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4, port);
    wasi_sockets_udp_tuple2_own_incoming_datagram_stream_own_outgoing_datagram_stream_t streams;
    error_code_t err;
    wasi_sockets_udp_borrow_udp_socket_t sock = wasi_sockets_udp_borrow_udp_socket(socket);
    if (!wasi_sockets_udp_method_udp_socket_stream(sock, NULL, &streams, &err)) {
        fail("stream", err);
    }
    printf("bound to %u\n", port);
    fflush(stdout);
    for (unsigned long served = 0; count == 0 || served < count; served++) {
        wasi_sockets_udp_incoming_datagram_t datagram = receive_one(streams.f0, NULL);
        char reply[1100];
        int shown = (int)(datagram.data.len > 1024 ? 1024 : datagram.data.len);
        int len =
            snprintf(reply, sizeof reply, "echo: %.*s", shown, (const char *)datagram.data.ptr);
        send_one(streams.f1, (const uint8_t *)reply, (size_t)len, &datagram.remote_address);
        wasi_sockets_udp_incoming_datagram_free(&datagram);
    }
    /* A socket's streams are its children: they go first. */
    wasi_sockets_udp_incoming_datagram_stream_drop_own(streams.f0);
    wasi_sockets_udp_outgoing_datagram_stream_drop_own(streams.f1);
    wasi_sockets_udp_udp_socket_drop_own(socket);
}

static void udp_send(network_t network, const char *host, uint16_t port, const char *message) {
    wasi_sockets_network_ip_address_family_t family;
    socket_address_t remote = with_port(resolve(network, host), port, &family);
    udp_socket_t socket = udp_bound(network, family, 0);
    wasi_sockets_udp_tuple2_own_incoming_datagram_stream_own_outgoing_datagram_stream_t streams;
    error_code_t err;
    /* A stream to one peer: what comes back from anyone else is dropped by the kernel. */
    wasi_sockets_udp_borrow_udp_socket_t sock = wasi_sockets_udp_borrow_udp_socket(socket);
    if (!wasi_sockets_udp_method_udp_socket_stream(sock, &remote, &streams, &err)) {
        fail("stream", err);
    }
    send_one(streams.f1, (const uint8_t *)message, strlen(message), NULL);
    uint64_t deadline = wasi_clocks_monotonic_clock_now() + UDP_ANSWER_WAIT_NS;
    wasi_sockets_udp_incoming_datagram_t datagram = receive_one(streams.f0, &deadline);
    uint16_t from = datagram.remote_address.tag == WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4
                        ? datagram.remote_address.val.ipv4.port
                        : datagram.remote_address.val.ipv6.port;
    printf("%.*s (from port %u)\n", (int)datagram.data.len, (const char *)datagram.data.ptr,
           from);
    fflush(stdout);
    wasi_sockets_udp_incoming_datagram_free(&datagram);
    wasi_sockets_udp_incoming_datagram_stream_drop_own(streams.f0);
    wasi_sockets_udp_outgoing_datagram_stream_drop_own(streams.f1);
    wasi_sockets_udp_udp_socket_drop_own(socket);
}

int main(int argc, char **argv) {
    wasi_sockets_network_own_network_t network = wasi_sockets_instance_network_instance_network();
    network_t borrowed = wasi_sockets_network_borrow_network(network);
    if (argc >= 3 && argc <= 4 && strcmp(argv[1], "serve") == 0) {
        unsigned long count = argc == 4 ? strtoul(argv[3], NULL, 10) : 0;
        serve(borrowed, parse_port(argv[2]), count);
    } else if (argc == 5 && strcmp(argv[1], "connect") == 0) {
        call(borrowed, argv[2], parse_port(argv[3]), argv[4]);
    } else if (argc >= 3 && argc <= 4 && strcmp(argv[1], "udp-serve") == 0) {
        unsigned long count = argc == 4 ? strtoul(argv[3], NULL, 10) : 0;
        udp_serve(borrowed, parse_port(argv[2]), count);
    } else if (argc == 5 && strcmp(argv[1], "udp-send") == 0) {
        udp_send(borrowed, argv[2], parse_port(argv[3]), argv[4]);
    } else {
        usage();
    }
    wasi_sockets_network_network_drop_own(network);
    return 0;
}
