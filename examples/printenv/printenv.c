/* Prints what the container's process sees: argv, the environment and the working
 * directory, one per line, so a spec's process section can be checked from outside. */
#include <stdio.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; *e; e++)
        printf("env:%s\n", *e);
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd))
        printf("cwd=%s\n", cwd);
    else
        perror("getcwd");
    return 0;
}
