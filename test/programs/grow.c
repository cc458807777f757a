/* Grows its memory by 1 MiB every 20 ms, touching every page, and says so; it never stops
 * by itself. A memory limit (set at create or lowered by an update) is what ends it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every chunk is kept reachable, so the compiler cannot elide the allocations. */
static char *chunks[4096];

int main(void) {
    for (int mib = 1; mib < 4096; mib++) {
        char *chunk = malloc(1 << 20);
        if (chunk == NULL) {
            printf("malloc failed at %d MiB\n", mib);
            return 1;
        }
        memset(chunk, mib, 1 << 20);
        chunks[mib] = chunk;
        printf("grew to %d MiB (%d)\n", mib, chunks[mib][mib]);
        fflush(stdout);
        usleep(20000);
    }
    return 0;
}
