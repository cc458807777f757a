/* Reports whether its stdin and stdout are a terminal, then echoes one line of input back
 * and exits 3, so a test can check a tty end to end (isatty, input, output, status). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    printf("stdin-tty=%d stdout-tty=%d\n", isatty(0), isatty(1));
    fflush(stdout);
    char line[256];
    if (fgets(line, sizeof line, stdin) == NULL) {
        printf("no input\n");
        return 4;
    }
    line[strcspn(line, "\r\n")] = 0;
    printf("got [%s]\n", line);
    return 3;
}
