/* The smallest useful container: print a greeting and exit 0. */
#include <stdio.h>

int main(void) {
    printf("hello from wasm\n");
    return 0;
}
