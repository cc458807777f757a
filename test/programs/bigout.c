/* Writes SIZE bytes (default 5 MiB) of a known pattern to stdout: byte i is
 * (i * 31 + i / 4096) mod 251, so a lost, duplicated or reordered chunk shows. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long size = argc > 1 ? atol(argv[1]) : 5L * 1024 * 1024;
    static unsigned char buf[65536];
    long written = 0;
    while (written < size) {
        long n = size - written < (long)sizeof buf ? size - written : (long)sizeof buf;
        for (long j = 0; j < n; j++) {
            long i = written + j;
            buf[j] = (unsigned char)((i * 31 + i / 4096) % 251);
        }
        if (fwrite(buf, 1, n, stdout) != (size_t)n) return 1;
        written += n;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
