/* A long-running service stand-in: prints "tick N" every interval (default 1 s) until
 * stopped, or COUNT times if given:  ticker [COUNT] [INTERVAL_MS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long count = argc > 1 ? atol(argv[1]) : 0;
    long interval_ms = argc > 2 ? atol(argv[2]) : 1000;
    struct timespec pause = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
    for (long i = 1; count == 0 || i <= count; i++) {
        printf("tick %ld\n", i);
        fflush(stdout);
        nanosleep(&pause, NULL);
    }
    return 0;
}
