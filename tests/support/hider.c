/* An LD_PRELOAD process hider for minerwatch's tests: hooks readdir and
 * readdir64 and skips the /proc entry named by $MW_HIDE_PID, as
 * libprocesshider-style rootkits do. Build:
 * cc -shared -fPIC -o hider.so hider.c -ldl */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static int mw_hidden(const char *name) {
    const char *h = getenv("MW_HIDE_PID");
    return h != NULL && *h != '\0' && strcmp(name, h) == 0;
}

struct dirent *readdir(DIR *d) {
    static struct dirent *(*real)(DIR *) = NULL;
    if (real == NULL) real = (struct dirent *(*)(DIR *))dlsym(RTLD_NEXT, "readdir");
    struct dirent *e;
    do { e = real(d); } while (e != NULL && mw_hidden(e->d_name));
    return e;
}

struct dirent64 *readdir64(DIR *d) {
    static struct dirent64 *(*real)(DIR *) = NULL;
    if (real == NULL) real = (struct dirent64 *(*)(DIR *))dlsym(RTLD_NEXT, "readdir64");
    struct dirent64 *e;
    do { e = real(d); } while (e != NULL && mw_hidden(e->d_name));
    return e;
}
