/* The wasm container of the pod test: leaves a message for its sidecar in a shared
 * directory (argv[1], else $PODAPP_DIR, else /data), says so on stdout (the CRI log), then
 * burns CPU until the runtime stops it (wasm has no signal handlers).
 *
 * The message is written to a temporary name and renamed into place, so a reader that
 * sees msg.txt sees all of it. */
#include <stdio.h>
#include <stdlib.h>

#define MESSAGE "hello sidecar, from the wasm container"

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : getenv("PODAPP_DIR");
    if (dir == NULL || *dir == '\0')
        dir = "/data";
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/msg.txt.tmp", dir);
    snprintf(path, sizeof path, "%s/msg.txt", dir);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%s\n", MESSAGE) < 0 || fclose(f) != 0) {
        perror(tmp);
        return 1;
    }
    if (rename(tmp, path) != 0) {
        perror(path);
        return 1;
    }
    printf("podapp: wrote %s\n", path);
    fflush(stdout);
    volatile unsigned long spins = 0;
    for (;;)
        spins++;
}
