/*
 * A name-service module that announces itself: built as libnss_probe.so.2 and put in a test
 * rootfs with an nsswitch.conf that names "probe". If the container's process ever loaded a
 * library from the image to answer a name lookup, this constructor would run native code
 * from the image in it; the test expects never to see its line.
 */
#include <unistd.h>

__attribute__((constructor)) static void announce(void) {
    static const char line[] = "nss probe loaded\n";
    (void)write(2, line, sizeof line - 1);
}
