/*
 * cli-exit: a WASI 0.2 command component that prints what it was started with and exits with
 * the exact status asked for.
 *
 *   cli-exit.wasm [CODE] [ARG]...
 *
 * Prints "argv[i]=ARG" for every argument, then "env: KEY=VALUE" for every environment
 * variable, one per line. If argv[1] is a decimal number from 0 to 255 it then exits with
 * that status; otherwise main returns 0.
 *
 * The exit goes through wasi:cli/exit.exit-with-code instead of exit(): the preview-1 adapter
 * turns proc_exit(n) into exit(result), which can only say ok or err, so every non-zero
 * exit() would reach the host as 1.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exit_code.h"

extern char **environ;

/* The status argv[1] asks for, or -1 if it is not a decimal number from 0 to 255. */
static int requested_status(const char *arg) {
    size_t digits = strspn(arg, "0123456789");
    if (digits == 0 || digits > 3 || arg[digits] != '\0') {
        return -1;
    }
    int status = atoi(arg);
    return status <= 255 ? status : -1;
}

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        printf("argv[%d]=%s\n", i, argv[i]);
    }
    for (char **env = environ; env != NULL && *env != NULL; env++) {
        printf("env: %s\n", *env);
    }
    int status = argc > 1 ? requested_status(argv[1]) : -1;
    if (status >= 0) {
        /* exit-with-code ends the instance at once: no atexit handlers, no stdio flush. */
        fflush(stdout);
        wasi_cli_exit_exit_with_code((uint8_t)status);
    }
    return 0;
}
