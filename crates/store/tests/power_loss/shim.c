/*
 * The power-loss test's I/O shim, loaded into the test's child with
 * LD_PRELOAD (crates/store/tests/power_loss.rs builds it with gcc).
 *
 * For every file and directory under $TL_SHIM_DIR it appends to
 * $TL_SHIM_LOG, in the order they happen, each write with its bytes, each
 * truncation, each sync, and each change of names (create, rename, unlink,
 * mkdir, rmdir). The test rebuilds from that log what a power cut could
 * leave: what was synced, and any part of what was not. sync_file_range is
 * logged as nothing: it does not flush the drive's cache.
 *
 * With $TL_SHIM_FAIL_SYNC=N the Nth fsync or fdatasync of a file under the
 * directory fails with EIO without syncing, as Linux reports a failed
 * writeback: the file's unsynced writes stay readable but are lost for
 * good ('F' in the log).
 *
 * Each record: kind (1 byte), ino, number (u64 each), path, path2 (u32
 * length then bytes each), data (u64 length then bytes); little-endian.
 * A global lock keeps the log in the order the operations took effect.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static char dir[PATH_MAX];
static size_t dir_len;
static long fail_at = -1;
static long syncs;

#define REAL(ret, name, ...)                                                   \
    static ret (*real_##name)(__VA_ARGS__);                                    \
    if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static int setup(void) {
    static int done;
    if (done) return log_fd >= 0;
    done = 1;
    const char *d = getenv("TL_SHIM_DIR"), *l = getenv("TL_SHIM_LOG");
    const char *f = getenv("TL_SHIM_FAIL_SYNC");
    if (!d || !l) return 0;
    snprintf(dir, sizeof dir, "%s", d);
    dir_len = strlen(dir);
    if (f) fail_at = atol(f);
    int (*real_open)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    log_fd = real_open(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    return log_fd >= 0;
}

static int under(const char *path) {
    return strncmp(path, dir, dir_len) == 0 &&
           (path[dir_len] == '/' || path[dir_len] == 0);
}

/* The absolute path of `path` relative to `dirfd`. */
static int resolve(int dirfd, const char *path, char *out) {
    char base[PATH_MAX];
    if (path[0] == '/') {
        snprintf(out, PATH_MAX, "%s", path);
        return 1;
    }
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base)) return 0;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0) return 0;
        base[n] = 0;
    }
    size_t b = strlen(base), p = strlen(path);
    if (b + 1 + p >= PATH_MAX) return 0;
    memcpy(out, base, b);
    out[b] = '/';
    memcpy(out + b + 1, path, p + 1);
    return 1;
}

/* The path of an open fd if it is under the directory. */
static int fd_under(int fd, char *out) {
    if (!setup()) return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n < 0) return 0;
    out[n] = 0;
    return under(out);
}

static void put(const void *p, size_t n) {
    ssize_t (*real_write)(int, const void *, size_t) = dlsym(RTLD_NEXT, "write");
    const char *c = p;
    while (n > 0) {
        ssize_t w = real_write(log_fd, c, n);
        if (w <= 0) abort();
        c += w;
        n -= (size_t)w;
    }
}

/* One record; `data` may be split in `iov`. Written as one buffer so that
 * a kill never leaves half a record before a whole one. */
static void record(char kind, uint64_t ino, uint64_t number, const char *path,
                   const char *path2, const struct iovec *iov, int iovcnt,
                   uint64_t data_len) {
    uint32_t p1 = path ? strlen(path) : 0, p2 = path2 ? strlen(path2) : 0;
    size_t total = 1 + 8 + 8 + 4 + p1 + 4 + p2 + 8 + data_len;
    char *buf = malloc(total), *at = buf;
    if (!buf) abort();
    *at++ = kind;
    memcpy(at, &ino, 8), at += 8;
    memcpy(at, &number, 8), at += 8;
    memcpy(at, &p1, 4), at += 4;
    memcpy(at, path, p1), at += p1;
    memcpy(at, &p2, 4), at += 4;
    memcpy(at, path2, p2), at += p2;
    memcpy(at, &data_len, 8), at += 8;
    uint64_t left = data_len;
    for (int i = 0; i < iovcnt && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
        memcpy(at, iov[i].iov_base, n), at += n, left -= n;
    }
    put(buf, total);
    free(buf);
}

static uint64_t ino_of(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static int is_dir(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Opening: a file it creates, and a truncation it asks for. */
static int opened(int fd, const char *abs, int existed, int flags) {
    if (fd < 0 || !setup() || !under(abs)) return fd;
    if (!existed && (flags & O_CREAT))
        record('C', ino_of(fd), 0, abs, NULL, NULL, 0, 0);
    if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY)
        record('T', ino_of(fd), 0, NULL, NULL, NULL, 0, 0);
    return fd;
}

static int do_openat(int dirfd, const char *path, int flags, mode_t mode,
                     const char *name) {
    int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, name);
    char abs[PATH_MAX];
    if (!setup() || !resolve(dirfd, path, abs) || !under(abs))
        return real(dirfd, path, flags, mode);
    pthread_mutex_lock(&lock);
    int existed = access(abs, F_OK) == 0;
    int fd = real(dirfd, path, flags, mode);
    opened(fd, abs, existed, flags);
    pthread_mutex_unlock(&lock);
    return fd;
}

static int do_open(const char *path, int flags, mode_t mode, const char *name) {
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, name);
    char abs[PATH_MAX];
    if (!setup() || !resolve(AT_FDCWD, path, abs) || !under(abs))
        return real(path, flags, mode);
    pthread_mutex_lock(&lock);
    int existed = access(abs, F_OK) == 0;
    int fd = real(path, flags, mode);
    opened(fd, abs, existed, flags);
    pthread_mutex_unlock(&lock);
    return fd;
}

#define MODE_ARG                                                               \
    mode_t mode = 0;                                                           \
    if (flags & (O_CREAT | __O_TMPFILE)) {                                     \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode = va_arg(ap, mode_t);                                             \
        va_end(ap);                                                            \
    }

int open(const char *path, int flags, ...) { MODE_ARG return do_open(path, flags, mode, "open"); }
int open64(const char *path, int flags, ...) { MODE_ARG return do_open(path, flags, mode, "open64"); }
int openat(int d, const char *path, int flags, ...) { MODE_ARG return do_openat(d, path, flags, mode, "openat"); }
int openat64(int d, const char *path, int flags, ...) { MODE_ARG return do_openat(d, path, flags, mode, "openat64"); }
int creat(const char *path, mode_t mode) { return do_open(path, O_CREAT | O_WRONLY | O_TRUNC, mode, "open"); }
int creat64(const char *path, mode_t mode) { return do_open(path, O_CREAT | O_WRONLY | O_TRUNC, mode, "open64"); }

/* A write of `iov` at `offset` (-1: at the file's offset, read first). */
static ssize_t written(int fd, ssize_t n, off_t at, const struct iovec *iov, int iovcnt) {
    if (n > 0) record('W', ino_of(fd), (uint64_t)at, NULL, NULL, iov, iovcnt, (uint64_t)n);
    return n;
}

static off_t offset_now(int fd) {
    if (fcntl(fd, F_GETFL) & O_APPEND) {
        struct stat st;
        return fstat(fd, &st) == 0 ? st.st_size : 0;
    }
    return lseek(fd, 0, SEEK_CUR);
}

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(ssize_t, write, int, const void *, size_t);
    char path[PATH_MAX];
    if (fd == log_fd || !fd_under(fd, path)) return real_write(fd, buf, count);
    pthread_mutex_lock(&lock);
    off_t at = offset_now(fd);
    ssize_t n = real_write(fd, buf, count);
    struct iovec iov = {(void *)buf, count};
    written(fd, n, at, &iov, 1);
    pthread_mutex_unlock(&lock);
    return n;
}

#define PWRITE(name, off_type)                                                 \
    ssize_t name(int fd, const void *buf, size_t count, off_type offset) {     \
        REAL(ssize_t, name, int, const void *, size_t, off_type);              \
        char path[PATH_MAX];                                                   \
        if (!fd_under(fd, path)) return real_##name(fd, buf, count, offset);   \
        pthread_mutex_lock(&lock);                                             \
        ssize_t n = real_##name(fd, buf, count, offset);                       \
        struct iovec iov = {(void *)buf, count};                               \
        written(fd, n, offset, &iov, 1);                                       \
        pthread_mutex_unlock(&lock);                                           \
        return n;                                                              \
    }
PWRITE(pwrite, off_t)
PWRITE(pwrite64, off64_t)

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL(ssize_t, writev, int, const struct iovec *, int);
    char path[PATH_MAX];
    if (!fd_under(fd, path)) return real_writev(fd, iov, iovcnt);
    pthread_mutex_lock(&lock);
    off_t at = offset_now(fd);
    ssize_t n = real_writev(fd, iov, iovcnt);
    written(fd, n, at, iov, iovcnt);
    pthread_mutex_unlock(&lock);
    return n;
}

#define PWRITEV(name, off_type)                                                \
    ssize_t name(int fd, const struct iovec *iov, int iovcnt, off_type off) {  \
        REAL(ssize_t, name, int, const struct iovec *, int, off_type);         \
        char path[PATH_MAX];                                                   \
        if (!fd_under(fd, path)) return real_##name(fd, iov, iovcnt, off);     \
        pthread_mutex_lock(&lock);                                             \
        ssize_t n = real_##name(fd, iov, iovcnt, off);                         \
        written(fd, n, off, iov, iovcnt);                                      \
        pthread_mutex_unlock(&lock);                                           \
        return n;                                                              \
    }
PWRITEV(pwritev, off_t)
PWRITEV(pwritev64, off64_t)

ssize_t copy_file_range(int in, off64_t *off_in, int out, off64_t *off_out,
                        size_t len, unsigned flags) {
    REAL(ssize_t, copy_file_range, int, off64_t *, int, off64_t *, size_t, unsigned);
    char path[PATH_MAX];
    if (!fd_under(out, path)) return real_copy_file_range(in, off_in, out, off_out, len, flags);
    pthread_mutex_lock(&lock);
    off_t at = off_out ? *off_out : lseek(out, 0, SEEK_CUR);
    ssize_t n = real_copy_file_range(in, off_in, out, off_out, len, flags);
    if (n > 0) {
        /* Logged as the bytes it wrote, read back. */
        char *copy = malloc((size_t)n);
        if (!copy || pread(out, copy, (size_t)n, at) != n) abort();
        struct iovec iov = {copy, (size_t)n};
        written(out, n, at, &iov, 1);
        free(copy);
    }
    pthread_mutex_unlock(&lock);
    return n;
}

#define TRUNCATE(name, off_type)                                               \
    int name(int fd, off_type len) {                                           \
        REAL(int, name, int, off_type);                                        \
        char path[PATH_MAX];                                                   \
        if (!fd_under(fd, path)) return real_##name(fd, len);                  \
        pthread_mutex_lock(&lock);                                             \
        int r = real_##name(fd, len);                                          \
        if (r == 0) record('T', ino_of(fd), (uint64_t)len, NULL, NULL, NULL, 0, 0); \
        pthread_mutex_unlock(&lock);                                           \
        return r;                                                              \
    }
TRUNCATE(ftruncate, off_t)
TRUNCATE(ftruncate64, off64_t)

static int synced(int fd, int (*real)(int)) {
    char path[PATH_MAX];
    if (!fd_under(fd, path)) return real(fd);
    pthread_mutex_lock(&lock);
    int r;
    if (is_dir(fd)) {
        r = real(fd);
        if (r == 0) record('D', 0, 0, path, NULL, NULL, 0, 0);
    } else if (++syncs == fail_at) {
        record('F', ino_of(fd), 0, NULL, NULL, NULL, 0, 0);
        errno = EIO;
        r = -1;
    } else {
        r = real(fd);
        if (r == 0) record('S', ino_of(fd), 0, NULL, NULL, NULL, 0, 0);
    }
    pthread_mutex_unlock(&lock);
    return r;
}

int fsync(int fd) { REAL(int, fsync, int); return synced(fd, real_fsync); }
int fdatasync(int fd) { REAL(int, fdatasync, int); return synced(fd, real_fdatasync); }

/* Names: logged after they took effect. */
static int named(char kind, int r, const char *a, const char *b) {
    if (r == 0) record(kind, 0, 0, a, b, NULL, 0, 0);
    return r;
}

int renameat2(int od, const char *old, int nd, const char *new, unsigned flags) {
    REAL(int, renameat2, int, const char *, int, const char *, unsigned);
    char a[PATH_MAX], b[PATH_MAX];
    if (!setup() || !resolve(od, old, a) || !resolve(nd, new, b) || (!under(a) && !under(b)))
        return real_renameat2(od, old, nd, new, flags);
    pthread_mutex_lock(&lock);
    int r = named('N', real_renameat2(od, old, nd, new, flags), a, b);
    pthread_mutex_unlock(&lock);
    return r;
}
int renameat(int od, const char *old, int nd, const char *new) { return renameat2(od, old, nd, new, 0); }
int rename(const char *old, const char *new) { return renameat2(AT_FDCWD, old, AT_FDCWD, new, 0); }

int unlinkat(int d, const char *path, int flags) {
    REAL(int, unlinkat, int, const char *, int);
    char a[PATH_MAX];
    if (!setup() || !resolve(d, path, a) || !under(a)) return real_unlinkat(d, path, flags);
    pthread_mutex_lock(&lock);
    int r = named((flags & AT_REMOVEDIR) ? 'R' : 'U', real_unlinkat(d, path, flags), a, NULL);
    pthread_mutex_unlock(&lock);
    return r;
}
int unlink(const char *path) { return unlinkat(AT_FDCWD, path, 0); }
int rmdir(const char *path) { return unlinkat(AT_FDCWD, path, AT_REMOVEDIR); }

int mkdirat(int d, const char *path, mode_t mode) {
    REAL(int, mkdirat, int, const char *, mode_t);
    char a[PATH_MAX];
    if (!setup() || !resolve(d, path, a) || !under(a)) return real_mkdirat(d, path, mode);
    pthread_mutex_lock(&lock);
    int r = named('M', real_mkdirat(d, path, mode), a, NULL);
    pthread_mutex_unlock(&lock);
    return r;
}
int mkdir(const char *path, mode_t mode) { return mkdirat(AT_FDCWD, path, mode); }
