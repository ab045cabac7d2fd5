/*
 * wirefs_fuse: reads /dev/fuse on Node's own event loop. The fd is made non-blocking and watched
 * with a uv_poll handle (the device implements poll: fs/fuse/dev.c fuse_dev_poll), so a request
 * reaches JavaScript without a thread hop: the kernel wakes the loop, we read until EAGAIN and hand
 * each request over as its own Buffer. A thread doing blocking reads costs a wake-up and a message
 * between threads per request (about 100 microseconds here), which dominated small operations.
 *
 * start(fd, bufferSize, onFrame, onEnd[, nosys[, attrs]]) -> stop(): onFrame(Buffer) per request; onEnd(code)
 * once, with "ENODEV" (unmounted) or another errno name, after which the handle is closed. nosys, a
 * Uint32Array of 128: a request whose opcode o < 64 has nosys[o] set is answered ENOSYS here, and
 * counted in nosys[64 + o], without waking JavaScript (Python's open() asks IOCTL TCGETS of every
 * file it opens; the session implements no ioctl).
 *
 * start(..., nosys, attrs): attrs, a Uint8Array of slots of ATTR_SLOT bytes that JavaScript keeps
 * (src/fuse/native-attrs.ts): slot nodeid % count holds a node's u64 nodeid (0: empty), its f64
 * expiry in milliseconds since the epoch, and the struct fuse_attr_out a GETATTR of it is answered
 * with. Such a GETATTR is answered here, and counted in nosys[64 + 3]: the kernel asks again for a
 * directory's attributes after every name made or removed in it (fs/fuse/dir.c fuse_dir_changed),
 * for its next permission check, so `rm -rf` and `tar x` sent one per file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

/* See above: a slot of the attrs table, and what it holds. */
#define ATTR_SLOT 128
#define ATTR_OUT_SIZE 104
#define FUSE_GETATTR 3

/* Requests read per wake-up before yielding to the rest of the loop (timers, sockets). */
#define BATCH 32
/*
 * A request at least this long (a big WRITE) is handed over in the read buffer itself, not copied
 * out of it: copying 1 MiB WRITEs into fresh Buffers cost the client about a fifth of its CPU in a
 * sequential write (the copy, and the page faults of memory the allocator had just mapped). The
 * reader reads on into a spare buffer; one JavaScript is done with comes back to the spares.
 */
#define HANDOFF_MIN (64 * 1024)
#define SPARES_MAX 8

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref on_frame;
  napi_ref on_end;
  napi_async_context ctx;
  int fd;
  size_t size;
  char *buf;
  int stopped;
  /* The nosys array (see above) and a reference that keeps it alive; NULL without one. */
  uint32_t *nosys;
  napi_ref nosys_ref;
  /* The attrs table (see above), its slot count and a reference that keeps it alive. */
  uint8_t *attrs;
  size_t attr_slots;
  napi_ref attrs_ref;
  /* Read buffers JavaScript has given back (each r->size long), kept for the next handoffs. */
  char *spares[SPARES_MAX];
  int nspares;
} reader_t;

static void on_closed(uv_handle_t *h) {
  reader_t *r = (reader_t *)h->data;
  napi_delete_reference(r->env, r->on_frame);
  napi_delete_reference(r->env, r->on_end);
  if (r->nosys_ref) napi_delete_reference(r->env, r->nosys_ref);
  if (r->attrs_ref) napi_delete_reference(r->env, r->attrs_ref);
  r->nosys = NULL;
  r->attrs = NULL;
  napi_async_destroy(r->env, r->ctx);
  free(r->buf);
  r->buf = NULL;
  while (r->nspares > 0) free(r->spares[--r->nspares]);
  /* r itself stays: the stop function JavaScript holds points at it (one small struct per mount). */
}

static void finish(reader_t *r, const char *code) {
  if (r->stopped) return;
  r->stopped = 1;
  uv_poll_stop(&r->poll);
  napi_env env = r->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, arg, result;
  napi_get_reference_value(env, r->on_end, &cb);
  napi_get_global(env, &recv);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &arg);
  napi_make_callback(env, r->ctx, recv, cb, 1, &arg, &result);
  napi_close_handle_scope(env, scope);
  uv_close((uv_handle_t *)&r->poll, on_closed);
}

/* A handed-over buffer is garbage: it becomes a spare, unless there are enough or the reader ended. */
static void on_buffer_freed(napi_env env, void *data, void *hint) {
  reader_t *r = (reader_t *)hint;
  if (!r->stopped && r->nspares < SPARES_MAX) r->spares[r->nspares++] = data;
  else free(data);
  (void)env;
}

/* The request of n bytes in r->buf as a Buffer: the read buffer itself when big, else a copy. */
static napi_status frame_buffer(reader_t *r, size_t n, napi_value *out) {
  void *data;
  if (n < HANDOFF_MIN) return napi_create_buffer_copy(r->env, n, r->buf, &data, out);
  char *next = r->nspares > 0 ? r->spares[--r->nspares] : malloc(r->size);
  if (!next) return napi_create_buffer_copy(r->env, n, r->buf, &data, out);
  napi_status st = napi_create_external_buffer(r->env, n, r->buf, on_buffer_freed, r, out);
  if (st != napi_ok) {
    if (r->nspares < SPARES_MAX) r->spares[r->nspares++] = next;
    else free(next);
    return napi_create_buffer_copy(r->env, n, r->buf, &data, out);
  }
  r->buf = next;
  return napi_ok;
}

/*
 * Answers the request in r->buf with ENOSYS when its opcode is one JavaScript asked for; true if
 * it did. fuse_in_header: len u32, opcode u32, unique u64, ... (40 bytes); fuse_out_header: len
 * u32, error s32, unique u64. A failed write (ENOENT: the request was interrupted) needs nothing.
 */
static int answer_nosys(reader_t *r, size_t n) {
  uint32_t opcode;
  uint64_t unique;
  if (n < 40) return 0;
  memcpy(&opcode, r->buf + 4, 4);
  if (opcode >= 64 || !r->nosys[opcode]) return 0;
  memcpy(&unique, r->buf + 8, 8);
  struct {
    uint32_t len;
    int32_t error;
    uint64_t unique;
  } out = {16, -ENOSYS, unique};
  ssize_t w = write(r->fd, &out, sizeof out);
  (void)w;
  r->nosys[64 + opcode]++;
  return 1;
}

/*
 * Answers the GETATTR in r->buf from the attrs table if its node has an unexpired slot; true if it
 * did. fuse_in_header has the nodeid at offset 16.
 */
static int answer_attr(reader_t *r, size_t n) {
  uint32_t opcode;
  uint64_t unique, nodeid, held;
  double until;
  if (n < 40 || !r->attrs) return 0;
  memcpy(&opcode, r->buf + 4, 4);
  if (opcode != FUSE_GETATTR) return 0;
  memcpy(&nodeid, r->buf + 16, 8);
  const uint8_t *slot = r->attrs + (nodeid % r->attr_slots) * ATTR_SLOT;
  memcpy(&held, slot, 8);
  if (nodeid == 0 || held != nodeid) return 0;
  memcpy(&until, slot + 8, 8);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  if ((double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6 >= until) return 0;
  memcpy(&unique, r->buf + 8, 8);
  struct {
    uint32_t len;
    int32_t error;
    uint64_t unique;
    uint8_t attr_out[ATTR_OUT_SIZE];
  } out;
  out.len = sizeof out;
  out.error = 0;
  out.unique = unique;
  memcpy(out.attr_out, slot + 16, ATTR_OUT_SIZE);
  ssize_t w = write(r->fd, &out, sizeof out);
  (void)w;
  r->nosys[64 + FUSE_GETATTR]++;
  return 1;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  reader_t *r = (reader_t *)h->data;
  if (r->stopped) return;
  for (int i = 0; i < BATCH; i++) {
    ssize_t n = read(r->fd, r->buf, r->size);
    if (n < 0) {
      int e = errno;
      /* ENOENT: the request was interrupted before we read it; EINTR: try again. */
      if (e == ENOENT || e == EINTR) continue;
      if (e == EAGAIN) return;
      /* ENODEV: unmounted, the clean end; ECONNABORTED: aborted (FUSE_ABORT_ERROR, 7.27). */
      finish(r, e == ENODEV || e == ECONNABORTED ? "ENODEV" : strerror(e));
      return;
    }
    if (n == 0) {
      finish(r, "ENODEV");
      return;
    }
    if (r->nosys && (answer_nosys(r, (size_t)n) || answer_attr(r, (size_t)n))) continue;
    napi_env env = r->env;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value cb, recv, buf, result;
    frame_buffer(r, (size_t)n, &buf);
    napi_get_reference_value(env, r->on_frame, &cb);
    napi_get_global(env, &recv);
    /* make_callback, not call_function: promise continuations and nextTicks run after each frame. */
    napi_make_callback(env, r->ctx, recv, cb, 1, &buf, &result);
    napi_close_handle_scope(env, scope);
    if (r->stopped) return;
  }
  (void)status;
  (void)events;
}

static napi_value stop_reader(napi_env env, napi_callback_info info) {
  void *data;
  napi_get_cb_info(env, info, NULL, NULL, NULL, &data);
  reader_t *r = (reader_t *)data;
  if (!r->stopped) {
    r->stopped = 1;
    uv_poll_stop(&r->poll);
    uv_close((uv_handle_t *)&r->poll, on_closed);
  }
  return NULL;
}

static napi_value throw_errno(napi_env env, const char *what, int e) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* The data of v if it is a typed array of type `want` (its element count in *length); else NULL. */
static void *typed_array(napi_env env, napi_value v, napi_typedarray_type want, size_t *length) {
  napi_typedarray_type type;
  void *data;
  bool is_array = false;
  napi_is_typedarray(env, v, &is_array);
  if (!is_array || napi_get_typedarray_info(env, v, &type, length, &data, NULL, NULL) != napi_ok || type != want) return NULL;
  return data;
}

static napi_value start_reader(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "start(fd, bufferSize, onFrame, onEnd)");
    return NULL;
  }
  int32_t fd;
  int64_t size;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &size) != napi_ok || size < 8192) {
    napi_throw_type_error(env, NULL, "bad fd or buffer size");
    return NULL;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return throw_errno(env, "fcntl", errno);
  reader_t *r = calloc(1, sizeof *r);
  if (!r) return throw_errno(env, "reader", ENOMEM);
  r->buf = malloc((size_t)size);
  if (!r->buf) {
    free(r);
    return throw_errno(env, "reader buffer", ENOMEM);
  }
  r->env = env;
  r->fd = fd;
  r->size = (size_t)size;
  napi_create_reference(env, argv[2], 1, &r->on_frame);
  napi_create_reference(env, argv[3], 1, &r->on_end);
  size_t length;
  uint32_t *nosys = argc >= 5 ? typed_array(env, argv[4], napi_uint32_array, &length) : NULL;
  if (nosys && length >= 128) {
    r->nosys = nosys;
    napi_create_reference(env, argv[4], 1, &r->nosys_ref);
  }
  uint8_t *attrs = argc >= 6 && r->nosys ? typed_array(env, argv[5], napi_uint8_array, &length) : NULL;
  if (attrs && length >= ATTR_SLOT && length % ATTR_SLOT == 0) {
    r->attrs = attrs;
    r->attr_slots = length / ATTR_SLOT;
    napi_create_reference(env, argv[5], 1, &r->attrs_ref);
  }
  napi_value name;
  napi_create_string_utf8(env, "wirefs:fuse-reader", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &r->ctx);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc == 0) {
    r->poll.data = r;
    rc = uv_poll_start(&r->poll, UV_READABLE, on_poll);
  }
  if (rc != 0) {
    napi_delete_reference(env, r->on_frame);
    napi_delete_reference(env, r->on_end);
    if (r->nosys_ref) napi_delete_reference(env, r->nosys_ref);
    if (r->attrs_ref) napi_delete_reference(env, r->attrs_ref);
    napi_async_destroy(env, r->ctx);
    free(r->buf);
    free(r);
    napi_throw_error(env, NULL, uv_strerror(rc));
    return NULL;
  }
  napi_value stop;
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, stop_reader, r, &stop);
  return stop;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start_reader, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
