/* Prints a line, then traps with `unreachable` two calls deep, so the backtrace has frames. */
#include <stdio.h>

__attribute__((noinline)) static void crash(void) { __builtin_trap(); }
__attribute__((noinline)) void do_work(void) { crash(); }

int main(void) {
    printf("about to trap\n");
    fflush(stdout);
    do_work();
    return 0;
}
