/*
 * wirefs_sys: the few Linux system calls Node core lacks and the passthrough source needs
 * (renameat2 flags, mknod, fallocate, SEEK_DATA/SEEK_HOLE, xattrs, nanosecond utimensat), and the two
 * that confine it to the exported tree: openat2 with RESOLVE_* flags, and a chmod that never
 * follows a symlink.
 * pwriteIdle writes for the client's data cache at idle priority.
 * Every call runs on the libuv pool through one generic async work item and returns a Promise;
 * failures reject with an Error whose `code` is the errno name and `errno` the positive number,
 * like Node's own fs errors, so the sources' toErrno() handles both the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <node_api.h>

typedef enum {
  OP_RENAMEAT2,
  OP_MKNOD,
  OP_FALLOCATE,
  OP_LSEEK,
  OP_LGETXATTR,
  OP_LSETXATTR,
  OP_LLISTXATTR,
  OP_LREMOVEXATTR,
  OP_FGETXATTR,
  OP_FSETXATTR,
  OP_FLISTXATTR,
  OP_FREMOVEXATTR,
  OP_UTIMENSAT,
  OP_FUTIMENS,
  OP_OPENAT2,
  OP_LCHMOD,
  OP_PWRITE_IDLE,
  OP_SYNC_FILE_RANGE,
} op_t;

static const char *const op_names[] = {
  "renameat2", "mknod", "fallocate", "lseek", "lgetxattr", "lsetxattr", "llistxattr",
  "lremovexattr", "fgetxattr", "fsetxattr", "flistxattr", "fremovexattr", "utimensat", "futimens",
  "openat2", "lchmod", "pwriteIdle", "syncFileRange",
};

/* One request: the inputs of any op, its result, and the errno it failed with (0 = success). */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  op_t op;
  char *path;
  char *path2; /* renameat2's new path */
  char *name;  /* xattr name */
  int fd;
  int flags;
  int64_t a, b; /* offsets, lengths, modes, device numbers */
  struct timespec ts[2];
  char *buf; /* xattr value in, or value/name list out */
  size_t buflen;
  int64_t result;
  int err;
  napi_ref keep; /* pwriteIdle: the caller's Buffer, written from in place */
  const char *data;
} req_t;

static void req_free(req_t *r) {
  free(r->path);
  free(r->path2);
  free(r->name);
  free(r->buf);
  free(r);
}

/* getxattr/listxattr with a buffer sized by asking first; retried if it grew in between. */
static void sized_xattr(req_t *r) {
  for (int attempt = 0; attempt < 8; attempt++) {
    ssize_t n;
    switch (r->op) {
      case OP_LGETXATTR: n = lgetxattr(r->path, r->name, NULL, 0); break;
      case OP_FGETXATTR: n = fgetxattr(r->fd, r->name, NULL, 0); break;
      case OP_LLISTXATTR: n = llistxattr(r->path, NULL, 0); break;
      default: n = flistxattr(r->fd, NULL, 0); break;
    }
    if (n < 0) { r->err = errno; return; }
    free(r->buf);
    r->buf = malloc(n > 0 ? (size_t)n : 1);
    if (!r->buf) { r->err = ENOMEM; return; }
    switch (r->op) {
      case OP_LGETXATTR: n = lgetxattr(r->path, r->name, r->buf, (size_t)n); break;
      case OP_FGETXATTR: n = fgetxattr(r->fd, r->name, r->buf, (size_t)n); break;
      case OP_LLISTXATTR: n = llistxattr(r->path, r->buf, (size_t)n); break;
      default: n = flistxattr(r->fd, r->buf, (size_t)n); break;
    }
    if (n >= 0) { r->buflen = (size_t)n; return; }
    if (errno != ERANGE) { r->err = errno; return; }
  }
  r->err = ERANGE;
}

static void execute(napi_env env, void *data) {
  (void)env;
  req_t *r = data;
  int rc = 0;
  switch (r->op) {
    case OP_RENAMEAT2: rc = renameat2(AT_FDCWD, r->path, AT_FDCWD, r->path2, (unsigned)r->flags); break;
    case OP_MKNOD: rc = mknod(r->path, (mode_t)r->a, (dev_t)r->b); break;
    case OP_FALLOCATE: rc = fallocate(r->fd, r->flags, (off_t)r->a, (off_t)r->b); break;
    case OP_LSEEK: {
      off_t off = lseek(r->fd, (off_t)r->a, r->flags);
      if (off < 0) rc = -1; else r->result = off;
      break;
    }
    case OP_LGETXATTR: case OP_FGETXATTR: case OP_LLISTXATTR: case OP_FLISTXATTR:
      sized_xattr(r);
      return;
    case OP_LSETXATTR: rc = lsetxattr(r->path, r->name, r->buf, r->buflen, r->flags); break;
    case OP_FSETXATTR: rc = fsetxattr(r->fd, r->name, r->buf, r->buflen, r->flags); break;
    case OP_LREMOVEXATTR: rc = lremovexattr(r->path, r->name); break;
    case OP_FREMOVEXATTR: rc = fremovexattr(r->fd, r->name); break;
    case OP_UTIMENSAT: rc = utimensat(AT_FDCWD, r->path, r->ts, r->flags); break;
    case OP_FUTIMENS: rc = futimens(r->fd, r->ts); break;
    case OP_OPENAT2: {
      /* glibc has no wrapper: the raw system call (Linux 5.6). */
      struct open_how how;
      memset(&how, 0, sizeof how);
      how.flags = (uint64_t)(unsigned)r->flags | O_CLOEXEC;
      how.mode = (uint64_t)r->a;
      how.resolve = (uint64_t)r->b;
      long fd = syscall(SYS_openat2, r->fd, r->path, &how, sizeof how);
      if (fd < 0) rc = -1; else r->result = fd;
      break;
    }
    case OP_LCHMOD: {
      /* chmod(2) follows symlinks and Linux has no lchmod: pin the inode with an O_PATH fd that did
       * not follow, refuse a symlink, and change the mode through the fd's /proc link. */
      int fd = open(r->path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) { rc = -1; break; }
      struct stat st;
      if (fstat(fd, &st) < 0) rc = -1;
      else if (S_ISLNK(st.st_mode)) { errno = EOPNOTSUPP; rc = -1; }
      else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        rc = chmod(proc, (mode_t)r->a);
      }
      int saved = errno;
      close(fd);
      errno = saved;
      break;
    }
    case OP_PWRITE_IDLE: {
      /* Work no one waits for (filling the client's data cache): this pool thread runs it under
       * SCHED_IDLE, so it takes only CPU time nothing else wants, then goes back to its policy. */
      int policy = sched_getscheduler(0);
      struct sched_param old, idle;
      memset(&idle, 0, sizeof idle);
      int lowered = policy >= 0 && sched_getparam(0, &old) == 0 && sched_setscheduler(0, SCHED_IDLE, &idle) == 0;
      ssize_t n = pwrite(r->fd, r->data, (size_t)r->b, (off_t)r->a);
      int saved = errno;
      if (lowered) sched_setscheduler(0, policy, &old);
      errno = saved;
      if (n < 0) rc = -1; else r->result = n;
      break;
    }
    case OP_SYNC_FILE_RANGE: rc = sync_file_range(r->fd, (off_t)r->a, (off_t)r->b, (unsigned)r->flags); break;
  }
  if (rc < 0) r->err = errno;
}

static napi_value make_error_named(napi_env env, int err, const char *syscall_name) {
  const char *name = strerrorname_np(err);
  char code[32];
  if (name) snprintf(code, sizeof code, "%s", name); else snprintf(code, sizeof code, "E%d", err);
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s, %s", code, strerror(err), syscall_name);
  napi_value vcode, vmsg, error, verrno, vsys;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &vcode);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &vmsg);
  napi_create_error(env, vcode, vmsg, &error);
  napi_create_int32(env, err, &verrno);
  napi_set_named_property(env, error, "errno", verrno);
  napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &vsys);
  napi_set_named_property(env, error, "syscall", vsys);
  return error;
}

static napi_value make_error(napi_env env, int err, op_t op) {
  return make_error_named(env, err, op_names[op]);
}

static void complete(napi_env env, napi_status status, void *data) {
  req_t *r = data;
  napi_value value;
  if (status != napi_ok) r->err = ECANCELED;
  if (r->err) {
    napi_reject_deferred(env, r->deferred, make_error(env, r->err, r->op));
  } else {
    switch (r->op) {
      case OP_LSEEK: case OP_OPENAT2: case OP_PWRITE_IDLE: napi_create_int64(env, r->result, &value); break;
      case OP_LGETXATTR: case OP_FGETXATTR: case OP_LLISTXATTR: case OP_FLISTXATTR:
        napi_create_buffer_copy(env, r->buflen, r->buf, NULL, &value);
        break;
      default: napi_get_undefined(env, &value); break;
    }
    napi_resolve_deferred(env, r->deferred, value);
  }
  napi_delete_async_work(env, r->work);
  if (r->keep) napi_delete_reference(env, r->keep);
  req_free(r);
}

/* --- argument parsing: each getter throws a TypeError and returns 0 on bad input ------------- */

static int arg_string(napi_env env, napi_value v, char **out) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return 0;
  }
  *out = malloc(len + 1);
  if (!*out) { napi_throw_error(env, NULL, "out of memory"); return 0; }
  napi_get_value_string_utf8(env, v, *out, len + 1, &len);
  /* An embedded NUL would silently shorten the path: refuse it. */
  if (strlen(*out) != len) { napi_throw_type_error(env, NULL, "string contains NUL"); return 0; }
  return 1;
}

static int arg_int64(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < -9007199254740991.0 || d > 9007199254740991.0 ||
      d != (double)(int64_t)d) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static int arg_int(napi_env env, napi_value v, int *out) {
  int64_t x;
  if (!arg_int64(env, v, &x)) return 0;
  if (x < INT32_MIN || x > INT32_MAX) { napi_throw_range_error(env, NULL, "integer out of range"); return 0; }
  *out = (int)x;
  return 1;
}

static int arg_buffer(napi_env env, napi_value v, char **out, size_t *len) {
  bool is;
  void *data;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) { napi_throw_type_error(env, NULL, "expected a Buffer"); return 0; }
  napi_get_buffer_info(env, v, &data, len);
  *out = malloc(*len ? *len : 1);
  if (!*out) { napi_throw_error(env, NULL, "out of memory"); return 0; }
  memcpy(*out, data, *len);
  return 1;
}

static int arg_times(napi_env env, napi_value *argv, struct timespec ts[2]) {
  int64_t v[4];
  for (int i = 0; i < 4; i++) if (!arg_int64(env, argv[i], &v[i])) return 0;
  ts[0].tv_sec = (time_t)v[0];
  ts[0].tv_nsec = (long)v[1];
  ts[1].tv_sec = (time_t)v[2];
  ts[1].tv_nsec = (long)v[3];
  return 1;
}

/* Parses the op's arguments into r; returns 0 with a pending exception on bad input. */
static int parse(napi_env env, req_t *r, size_t argc, napi_value *argv) {
  static const size_t need[] = { 3, 3, 4, 3, 2, 4, 1, 2, 2, 4, 1, 2, 6, 5, 5, 2, 4, 4 };
  if (argc < need[r->op]) { napi_throw_type_error(env, NULL, "too few arguments"); return 0; }
  switch (r->op) {
    case OP_RENAMEAT2:
      return arg_string(env, argv[0], &r->path) && arg_string(env, argv[1], &r->path2) && arg_int(env, argv[2], &r->flags);
    case OP_MKNOD:
      return arg_string(env, argv[0], &r->path) && arg_int64(env, argv[1], &r->a) && arg_int64(env, argv[2], &r->b);
    case OP_FALLOCATE:
      return arg_int(env, argv[0], &r->fd) && arg_int(env, argv[1], &r->flags) && arg_int64(env, argv[2], &r->a) &&
             arg_int64(env, argv[3], &r->b);
    case OP_LSEEK:
      return arg_int(env, argv[0], &r->fd) && arg_int64(env, argv[1], &r->a) && arg_int(env, argv[2], &r->flags);
    case OP_LGETXATTR: case OP_LREMOVEXATTR:
      return arg_string(env, argv[0], &r->path) && arg_string(env, argv[1], &r->name);
    case OP_FGETXATTR: case OP_FREMOVEXATTR:
      return arg_int(env, argv[0], &r->fd) && arg_string(env, argv[1], &r->name);
    case OP_LSETXATTR:
      return arg_string(env, argv[0], &r->path) && arg_string(env, argv[1], &r->name) &&
             arg_buffer(env, argv[2], &r->buf, &r->buflen) && arg_int(env, argv[3], &r->flags);
    case OP_FSETXATTR:
      return arg_int(env, argv[0], &r->fd) && arg_string(env, argv[1], &r->name) &&
             arg_buffer(env, argv[2], &r->buf, &r->buflen) && arg_int(env, argv[3], &r->flags);
    case OP_LLISTXATTR:
      return arg_string(env, argv[0], &r->path);
    case OP_FLISTXATTR:
      return arg_int(env, argv[0], &r->fd);
    case OP_UTIMENSAT: {
      bool nofollow;
      if (!arg_string(env, argv[0], &r->path) || !arg_times(env, argv + 1, r->ts)) return 0;
      if (napi_get_value_bool(env, argv[5], &nofollow) != napi_ok) { napi_throw_type_error(env, NULL, "expected a boolean"); return 0; }
      r->flags = nofollow ? AT_SYMLINK_NOFOLLOW : 0;
      return 1;
    }
    case OP_FUTIMENS:
      return arg_int(env, argv[0], &r->fd) && arg_times(env, argv + 1, r->ts);
    case OP_OPENAT2:
      return arg_int(env, argv[0], &r->fd) && arg_string(env, argv[1], &r->path) && arg_int(env, argv[2], &r->flags) &&
             arg_int64(env, argv[3], &r->a) && arg_int64(env, argv[4], &r->b);
    case OP_LCHMOD:
      return arg_string(env, argv[0], &r->path) && arg_int64(env, argv[1], &r->a);
    case OP_PWRITE_IDLE: {
      /* (fd, buffer, length, position): written from the Buffer itself, kept alive by a reference. */
      bool is;
      void *data;
      size_t size;
      if (!arg_int(env, argv[0], &r->fd)) return 0;
      if (napi_is_buffer(env, argv[1], &is) != napi_ok || !is) { napi_throw_type_error(env, NULL, "expected a Buffer"); return 0; }
      napi_get_buffer_info(env, argv[1], &data, &size);
      if (!arg_int64(env, argv[2], &r->b) || !arg_int64(env, argv[3], &r->a)) return 0;
      if (r->b < 0 || r->a < 0 || (uint64_t)r->b > size) { napi_throw_range_error(env, NULL, "range outside the buffer"); return 0; }
      r->data = data;
      return napi_create_reference(env, argv[1], 1, &r->keep) == napi_ok;
    }
    case OP_SYNC_FILE_RANGE:
      return arg_int(env, argv[0], &r->fd) && arg_int64(env, argv[1], &r->a) && arg_int64(env, argv[2], &r->b) &&
             arg_int(env, argv[3], &r->flags);
  }
  return 0;
}

static napi_value dispatch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  void *opdata;
  napi_get_cb_info(env, info, &argc, argv, NULL, &opdata);
  req_t *r = calloc(1, sizeof *r);
  if (!r) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  r->op = (op_t)(intptr_t)opdata;
  if (!parse(env, r, argc, argv)) { req_free(r); return NULL; }
  napi_value promise, resource_name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, op_names[r->op], NAPI_AUTO_LENGTH, &resource_name);
  napi_create_async_work(env, NULL, resource_name, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

/* The arguments of a synchronous call: 0 with a TypeError pending if fewer than `need` came. */
static int sync_args(napi_env env, napi_callback_info info, napi_value *argv, size_t need) {
  size_t argc = need;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < need) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return 0;
  }
  return 1;
}

/*
 * openat2Sync(dirfd, path, flags, mode, resolve) -> fd: the same call as the async openat2, made on
 * the calling thread. Resolving a short path beneath an open directory takes microseconds, while a
 * trip through the libuv pool costs a thread wake-up each way (50 to 90 us here), and the confined
 * passthrough source makes one per path call.
 */
static napi_value openat2_sync(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!sync_args(env, info, argv, 5)) return NULL;
  int dirfd, flags;
  int64_t mode, resolve;
  char *path = NULL;
  if (!arg_int(env, argv[0], &dirfd) || !arg_string(env, argv[1], &path) || !arg_int(env, argv[2], &flags) ||
      !arg_int64(env, argv[3], &mode) || !arg_int64(env, argv[4], &resolve)) {
    free(path);
    return NULL;
  }
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t)(unsigned)flags | O_CLOEXEC;
  how.mode = (uint64_t)mode;
  how.resolve = (uint64_t)resolve;
  long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  int err = errno;
  free(path);
  if (fd < 0) {
    napi_throw(env, make_error(env, err, OP_OPENAT2));
    return NULL;
  }
  napi_value out;
  napi_create_int64(env, fd, &out);
  return out;
}

/*
 * futimensSync(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec): futimens(2) on the calling thread.
 * Setting the times of an open file touches only its inode in memory, so the pool's thread
 * wake-ups each way would cost far more than the call.
 */
static napi_value futimens_sync(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!sync_args(env, info, argv, 5)) return NULL;
  int fd;
  struct timespec ts[2];
  if (!arg_int(env, argv[0], &fd) || !arg_times(env, argv + 1, ts)) return NULL;
  if (futimens(fd, ts) != 0) {
    napi_throw(env, make_error(env, errno, OP_FUTIMENS));
    return NULL;
  }
  return NULL;
}

/*
 * linkatSync(oldDirfd, oldPath, newDirfd, newPath, flags): linkat(2) on the calling thread. Node has
 * no linkat; the passthrough source names a file made unnamed (O_TMPFILE) through its fd's
 * /proc/self/fd link with AT_SYMLINK_FOLLOW, which needs no capability beyond the directory's.
 */
static napi_value linkat_sync(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!sync_args(env, info, argv, 5)) return NULL;
  int olddir, newdir, flags;
  char *oldpath = NULL, *newpath = NULL;
  if (!arg_int(env, argv[0], &olddir) || !arg_string(env, argv[1], &oldpath) || !arg_int(env, argv[2], &newdir) ||
      !arg_string(env, argv[3], &newpath) || !arg_int(env, argv[4], &flags)) {
    free(oldpath);
    free(newpath);
    return NULL;
  }
  int rc = linkat(olddir, oldpath, newdir, newpath, flags);
  int err = errno;
  free(oldpath);
  free(newpath);
  if (rc != 0) napi_throw(env, make_error_named(env, err, "linkat"));
  return NULL;
}

/*
 * malloc_trim(0): hands the pages of freed heap memory back to the system (glibc keeps them, in every
 * arena a thread used, for the next malloc). Returns whether any memory was released.
 */
static napi_value malloc_trim_sync(napi_env env, napi_callback_info info) {
  napi_value out;
#ifdef __GLIBC__
  napi_get_boolean(env, malloc_trim(0) == 1, &out);
#else
  napi_get_boolean(env, false, &out);  /* other C libraries have no such call */
#endif
  return out;
}

/*
 * mallopt for a daemon that moves data in 1 MiB buffers: glibc serves blocks above its mmap
 * threshold (128 KiB at first) with a fresh mmap each and gives the top of a heap back once more
 * than the trim threshold is free there, so every such buffer was faulted in and zeroed page by
 * page again. Raised (mmap above mmapMb, trim above trimMb), freed buffers are reused; the daemons
 * give memory back with malloc_trim when a burst is over (src/lib/memory.ts). Returns whether
 * both settings took.
 */
static napi_value malloc_tune_sync(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  if (!sync_args(env, info, argv, 2)) return NULL;
  int mmap_mb, trim_mb;
  if (!arg_int(env, argv[0], &mmap_mb) || !arg_int(env, argv[1], &trim_mb)) return NULL;
  if (mmap_mb < 0 || mmap_mb > 1024 || trim_mb < 0 || trim_mb > 1024) {
    napi_throw_range_error(env, NULL, "thresholds are 0 to 1024 MiB");
    return NULL;
  }
#ifdef __GLIBC__
  int ok = mallopt(M_MMAP_THRESHOLD, mmap_mb << 20) == 1 && mallopt(M_TRIM_THRESHOLD, trim_mb << 20) == 1;
  napi_get_boolean(env, ok, &out);
#else
  (void)mmap_mb;
  (void)trim_mb;
  napi_get_boolean(env, false, &out);
#endif
  return out;
}

/*
 * preadv2(fd, [buffer+off, len], pos, RWF_NOWAIT) on the calling thread: the bytes read (0 at end
 * of file), or -errno. With RWF_NOWAIT the kernel copies only what its page cache holds and never
 * waits for the disk (EAGAIN instead), so a read the page cache can answer skips the trip to a
 * pool thread and back without ever blocking the event loop.
 */
static napi_value pread_nowait_sync(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!sync_args(env, info, argv, 5)) return NULL;
  int fd;
  int64_t off, len, pos;
  void *data;
  size_t size;
  if (!arg_int(env, argv[0], &fd)) return NULL;
  if (napi_get_buffer_info(env, argv[1], &data, &size) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return NULL;
  }
  if (!arg_int64(env, argv[2], &off) || !arg_int64(env, argv[3], &len) || !arg_int64(env, argv[4], &pos)) return NULL;
  if (off < 0 || len < 0 || pos < 0 || (uint64_t)off + (uint64_t)len > size) {
    napi_throw_range_error(env, NULL, "range outside the buffer");
    return NULL;
  }
  struct iovec iov = { (char *)data + off, (size_t)len };
  ssize_t n = preadv2(fd, &iov, 1, pos, RWF_NOWAIT);
  napi_value out;
  napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++) {
    napi_value fn;
    napi_create_function(env, op_names[i], NAPI_AUTO_LENGTH, dispatch, (void *)(intptr_t)i, &fn);
    napi_set_named_property(env, exports, op_names[i], fn);
  }
  napi_value v;
  napi_create_int64(env, UTIME_NOW, &v);
  napi_set_named_property(env, exports, "UTIME_NOW", v);
  napi_create_int64(env, UTIME_OMIT, &v);
  napi_set_named_property(env, exports, "UTIME_OMIT", v);
  napi_value sync_fn;
  napi_create_function(env, "openat2Sync", NAPI_AUTO_LENGTH, openat2_sync, NULL, &sync_fn);
  napi_set_named_property(env, exports, "openat2Sync", sync_fn);
  napi_create_function(env, "preadNowaitSync", NAPI_AUTO_LENGTH, pread_nowait_sync, NULL, &sync_fn);
  napi_set_named_property(env, exports, "preadNowaitSync", sync_fn);
  napi_create_function(env, "mallocTrim", NAPI_AUTO_LENGTH, malloc_trim_sync, NULL, &sync_fn);
  napi_set_named_property(env, exports, "mallocTrim", sync_fn);
  napi_create_function(env, "mallocTune", NAPI_AUTO_LENGTH, malloc_tune_sync, NULL, &sync_fn);
  napi_set_named_property(env, exports, "mallocTune", sync_fn);
  napi_create_function(env, "futimensSync", NAPI_AUTO_LENGTH, futimens_sync, NULL, &sync_fn);
  napi_set_named_property(env, exports, "futimensSync", sync_fn);
  napi_create_function(env, "linkatSync", NAPI_AUTO_LENGTH, linkat_sync, NULL, &sync_fn);
  napi_set_named_property(env, exports, "linkatSync", sync_fn);
  napi_create_int64(env, RESOLVE_BENEATH, &v);
  napi_set_named_property(env, exports, "RESOLVE_BENEATH", v);
  napi_create_int64(env, RESOLVE_NO_MAGICLINKS, &v);
  napi_set_named_property(env, exports, "RESOLVE_NO_MAGICLINKS", v);
  napi_create_int64(env, RESOLVE_NO_SYMLINKS, &v);
  napi_set_named_property(env, exports, "RESOLVE_NO_SYMLINKS", v);
  napi_create_int64(env, O_PATH, &v);
  napi_set_named_property(env, exports, "O_PATH", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
