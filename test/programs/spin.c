/* Announces itself, then computes forever without calling the host: only epoch
 * interruption can stop it. */
#include <stdio.h>

int main(void) {
    printf("spinning\n");
    fflush(stdout);
    volatile unsigned long x = 0;
    for (;;) x++;
}
