/* A small file tool for mounted directories:
 *   filetool write FILE TEXT   create/truncate FILE with TEXT and a newline
 *   filetool append FILE TEXT  append TEXT and a newline
 *   filetool read FILE         copy FILE to stdout
 *   filetool ls DIR            list DIR, one name per line, sorted
 * Errors go to stderr with the path and the reason; the exit status is 1. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *path) {
    fprintf(stderr, "filetool: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

static int put(const char *path, const char *mode, const char *text) {
    FILE *f = fopen(path, mode);
    if (!f) return fail("open", path);
    if (fprintf(f, "%s\n", text) < 0 || fclose(f) != 0) return fail("write", path);
    return 0;
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "write")) return put(argv[2], "w", argv[3]);
    if (argc >= 4 && !strcmp(argv[1], "append")) return put(argv[2], "a", argv[3]);
    if (argc >= 3 && !strcmp(argv[1], "read")) {
        FILE *f = fopen(argv[2], "r");
        if (!f) return fail("open", argv[2]);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
        if (ferror(f)) return fail("read", argv[2]);
        fclose(f);
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "ls")) {
        DIR *d = opendir(argv[2]);
        if (!d) return fail("opendir", argv[2]);
        char *names[1024];
        int count = 0;
        struct dirent *e;
        while ((e = readdir(d)) && count < 1024)
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                names[count++] = strdup(e->d_name);
        closedir(d);
        qsort(names, count, sizeof *names, cmp);
        for (int i = 0; i < count; i++) printf("%s\n", names[i]);
        return 0;
    }
    fprintf(stderr, "usage: filetool write|append FILE TEXT | read FILE | ls DIR\n");
    return 2;
}
