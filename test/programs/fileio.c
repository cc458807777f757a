/*
 * fileio: times the file system calls programs make most, from inside the program, so that
 * start-up is not in the figure. Built twice: as wasm (run by the shim and by the bench's
 * in-process floor) and natively (run by runc), from this one source.
 *
 *   fileio FILE STATS
 *
 * Reads FILE to its end in 4 KiB reads, then stats it STATS times, and prints
 *   read_us=R stat_us=S bytes=B
 * where R and S are the mean microseconds per call. Exits 1 if FILE cannot be read.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fileio FILE STATS\n");
        return 2;
    }
    long stats = atol(argv[2]);
    static char buf[4096];
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    long bytes = 0, reads = 0;
    double started = now_us();
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        reads++;
        if (n <= 0) {
            break;
        }
        bytes += n;
    }
    double read_us = (now_us() - started) / reads;
    close(fd);
    struct stat st;
    started = now_us();
    for (long i = 0; i < stats; i++) {
        if (stat(argv[1], &st) != 0) {
            perror(argv[1]);
            return 1;
        }
    }
    double stat_us = stats > 0 ? (now_us() - started) / stats : 0;
    printf("read_us=%.3f stat_us=%.3f bytes=%ld\n", read_us, stat_us, bytes);
    return 0;
}
