// wirefs_ext2fs: a small N-API binding of e2fsprogs' libext2fs, so ext2/3/4 images can be served
// read-write by the real implementation of the format (the one e2fsck, debugfs and fuse2fs use).
// It exposes inode-level primitives (read/write an inode's attributes, add/remove/retarget one
// directory entry, allocate/free an inode, file data I/O, xattrs); src/sources/ext-rw.ts composes
// them into the Vfs operations. How each maps onto libext2fs follows e2fsprogs' misc/fuse2fs.c
// (cited as "fuse2fs: op_x"); the code here is our own.
//
// Every call is SYNCHRONOUS on the JS thread, on purpose: libext2fs is not thread-safe (one
// ext2_filsys, its bitmaps and its unix_io cache are shared state), so calls must never overlap, and
// the TS side already serializes every operation of one image under a mutex. Each call is bounded
// (at most one request's worth of data, 1 MiB, through unix_io), so the event loop stalls for
// about as long as a pread would take; running them as libuv work items would add a thread hop
// and a copy per call and still need the same serialization.
//
// Errors throw a JS Error with `code` (errno name) and `errno` (positive), the shape toErrno()
// understands; libext2fs error codes (EXT2_ET_*) are translated to the errno Linux's ext4 would give.

#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <et/com_err.h>
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>

#define CHECK(call)                                                                             \
  do {                                                                                          \
    if ((call) != napi_ok) {                                                                    \
      napi_throw_error(env, NULL, "wirefs_ext2fs: N-API call failed: " #call);                  \
      return NULL;                                                                              \
    }                                                                                           \
  } while (0)

/** One open image: the libext2fs handle and whether it was opened for writing. */
typedef struct {
  ext2_filsys fs;
  int rw;
  /** s_state had EXT2_VALID_FS at open: only then is it set again on a clean close. */
  int was_valid;
} Image;

// --- errors -------------------------------------------------------------------------------------

/** EXT2_ET_* and errno values to the errno Linux ext4 reports for the same condition. */
static int to_errno(errcode_t err) {
  // unix_io and libext2fs pass system errors through as plain errno values.
  if (err > 0 && err < 256) return (int)err;
  switch (err) {
    case EXT2_ET_FILE_NOT_FOUND: return ENOENT;
    case EXT2_ET_DIR_EXISTS:
    case EXT2_ET_FILE_EXISTS: return EEXIST;
    case EXT2_ET_BLOCK_ALLOC_FAIL:
    case EXT2_ET_INODE_ALLOC_FAIL:
    case EXT2_ET_DIR_NO_SPACE:
    case EXT2_ET_EA_NO_SPACE:
    case EXT2_ET_INLINE_DATA_NO_SPACE: return ENOSPC;
    case EXT2_ET_NO_MEMORY: return ENOMEM;
    case EXT2_ET_RO_FILSYS: return EROFS;
    case EXT2_ET_EA_KEY_NOT_FOUND: return ENODATA;
    case EXT2_ET_FILE_TOO_BIG:
    case EXT2_ET_EA_INODE_CORRUPTED: return EFBIG;
    case EXT2_ET_INVALID_ARGUMENT:
    case EXT2_ET_EA_BAD_NAME_LEN: return EINVAL;
    case EXT2_ET_NO_DIRECTORY: return ENOTDIR;
    case EXT2_ET_UNIMPLEMENTED:
    case EXT2_ET_OP_NOT_SUPPORTED: return EOPNOTSUPP;
    default: return EIO; // checksum errors, bad extent trees, short reads: damage is EIO
  }
}

static const char *errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOSPC: return "ENOSPC";
    case ENOMEM: return "ENOMEM";
    case EROFS: return "EROFS";
    case ENODATA: return "ENODATA";
    case EFBIG: return "EFBIG";
    case EINVAL: return "EINVAL";
    case ENOTDIR: return "ENOTDIR";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EBUSY: return "EBUSY";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    default: return "EIO";
  }
}

/** Throws Error(`what: <libext2fs message>`) with code/errno; returns NULL for `return throw_err(...)`. */
static napi_value throw_err(napi_env env, const char *what, errcode_t err) {
  int e = to_errno(err);
  char msg[512];
  snprintf(msg, sizeof msg, "%s: %s", what, error_message(err));
  napi_value m, code, errv, no;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, NULL, m, &errv);
  napi_create_int32(env, e, &no);
  napi_set_named_property(env, errv, "errno", no);
  napi_set_named_property(env, errv, "code", code);
  napi_value raw;
  napi_create_double(env, (double)err, &raw);
  napi_set_named_property(env, errv, "ext2fsCode", raw);
  napi_throw(env, errv);
  return NULL;
}

// --- argument helpers ---------------------------------------------------------------------------

#define MAX_ARGS 8

typedef struct {
  napi_value argv[MAX_ARGS];
  size_t argc;
  Image *img;
} Args;

static void finalize_image(napi_env env, void *data, void *hint) {
  Image *img = data;
  // A handle dropped without close(): release the memory, never write (the TS side closes cleanly).
  if (img->fs) ext2fs_free(img->fs);
  free(img);
}

/** Reads the arguments; argv[0] must be an open image. Returns 0 (with an exception) on failure. */
static int get_args(napi_env env, napi_callback_info info, size_t want, Args *a) {
  a->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &a->argc, a->argv, NULL, NULL) != napi_ok || a->argc < want) {
    napi_throw_type_error(env, NULL, "wirefs_ext2fs: missing arguments");
    return 0;
  }
  void *p = NULL;
  if (napi_get_value_external(env, a->argv[0], &p) != napi_ok || !p || !((Image *)p)->fs) {
    napi_throw_error(env, "EIO", "wirefs_ext2fs: image is closed");
    return 0;
  }
  a->img = p;
  return 1;
}

static int arg_u32(napi_env env, napi_value v, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "wirefs_ext2fs: expected a number");
    return 0;
  }
  return 1;
}

static int arg_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "wirefs_ext2fs: expected a number");
    return 0;
  }
  return 1;
}

/** A UTF-8 string argument into buf (NUL-terminated); names and xattr keys are short. */
static int arg_str(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "wirefs_ext2fs: expected a string");
    return 0;
  }
  if (len >= cap - 1) {
    napi_throw_error(env, "ENAMETOOLONG", "wirefs_ext2fs: string too long");
    return 0;
  }
  return 1;
}

static void set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

static int get_opt_num(napi_env env, napi_value obj, const char *key, double *out) {
  bool has = false;
  napi_has_named_property(env, obj, key, &has);
  if (!has) return 0;
  napi_value v;
  napi_valuetype t;
  napi_get_named_property(env, obj, key, &v);
  napi_typeof(env, v, &t);
  if (t != napi_number) return 0;
  napi_get_value_double(env, v, out);
  return 1;
}

// --- inodes: times, owners, devices -------------------------------------------------------------

/** Does this inode have room for the *_extra nanosecond fields (ext4.h EXT4_FITS_IN_INODE)? */
static int has_extra(ext2_filsys fs, const struct ext2_inode_large *in, size_t field_end) {
  if (EXT2_INODE_SIZE(fs->super) <= EXT2_GOOD_OLD_INODE_SIZE) return 0;
  return (size_t)EXT2_GOOD_OLD_INODE_SIZE + in->i_extra_isize >= field_end;
}

#define FITS(fs, in, field) has_extra(fs, in, offsetof(struct ext2_inode_large, field) + sizeof((in)->field))

/**
 * ext4 time encoding (Documentation/filesystems/ext4/inodes.rst, "Inode Timestamps"): the low 32
 * bits are signed seconds; *_extra holds 2 epoch bits extending them to 34 bits, then nsec << 2.
 */
static void get_time(napi_env env, napi_value obj, const char *key, uint32_t lo, const uint32_t *extra) {
  int64_t sec = (int32_t)lo;
  uint32_t nsec = 0;
  if (extra) {
    sec += (int64_t)(*extra & 3) << 32;
    nsec = *extra >> 2;
    if (nsec >= 1000000000u) nsec = 0;
  }
  napi_value arr, s, n;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_double(env, (double)sec, &s);
  napi_create_uint32(env, nsec, &n);
  napi_set_element(env, arr, 0, s);
  napi_set_element(env, arr, 1, n);
  napi_set_named_property(env, obj, key, arr);
}

static void put_time(int64_t sec, uint32_t nsec, uint32_t *lo, uint32_t *extra) {
  *lo = (uint32_t)sec;
  if (extra) {
    int64_t epoch = (sec - (int64_t)(int32_t)(uint32_t)sec) >> 32;
    *extra = ((uint32_t)epoch & 3) | (nsec << 2);
  }
}

/** An optional [sec, nsec] property; returns 1 when present. */
static int get_opt_time(napi_env env, napi_value obj, const char *key, int64_t *sec, uint32_t *nsec) {
  bool has = false;
  napi_has_named_property(env, obj, key, &has);
  if (!has) return 0;
  napi_value arr, s, n;
  bool isarr = false;
  napi_get_named_property(env, obj, key, &arr);
  napi_is_array(env, arr, &isarr);
  if (!isarr) return 0;
  napi_get_element(env, arr, 0, &s);
  napi_get_element(env, arr, 1, &n);
  double ds = 0;
  uint32_t un = 0;
  napi_get_value_double(env, s, &ds);
  napi_get_value_uint32(env, n, &un);
  *sec = (int64_t)ds;
  *nsec = un < 1000000000u ? un : 0;
  return 1;
}

/**
 * Device numbers, as Linux ext4 stores them (fs/ext4/inode.c ext4_set_inode_state / old_encode_dev):
 * i_block[0] holds an old 8:8 number when both fit, else i_block[1] holds the new 12:20 encoding,
 * which is also the Linux dev_t value userspace sees.
 */
static uint32_t decode_rdev(const struct ext2_inode_large *in) {
  if (in->i_block[0]) {
    uint32_t old = in->i_block[0];
    uint32_t major = (old >> 8) & 0xff, minor = old & 0xff;
    return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
  }
  return in->i_block[1];
}

static void encode_rdev(struct ext2_inode_large *in, uint32_t dev) {
  uint32_t major = (dev >> 8) & 0xfff, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  if (major < 256 && minor < 256) {
    in->i_block[0] = (major << 8) | minor;
    in->i_block[1] = 0;
  } else {
    in->i_block[0] = 0;
    in->i_block[1] = dev;
    in->i_block[2] = 0;
  }
}

static errcode_t read_inode(ext2_filsys fs, ext2_ino_t ino, struct ext2_inode_large *in) {
  memset(in, 0, sizeof *in);
  return ext2fs_read_inode_full(fs, ino, EXT2_INODE(in), sizeof *in);
}

static errcode_t write_inode(ext2_filsys fs, ext2_ino_t ino, struct ext2_inode_large *in) {
  return ext2fs_write_inode_full(fs, ino, EXT2_INODE(in), sizeof *in);
}

static int file_type_of(uint32_t mode) {
  switch (mode & LINUX_S_IFMT) {
    case LINUX_S_IFREG: return EXT2_FT_REG_FILE;
    case LINUX_S_IFDIR: return EXT2_FT_DIR;
    case LINUX_S_IFCHR: return EXT2_FT_CHRDEV;
    case LINUX_S_IFBLK: return EXT2_FT_BLKDEV;
    case LINUX_S_IFIFO: return EXT2_FT_FIFO;
    case LINUX_S_IFSOCK: return EXT2_FT_SOCK;
    case LINUX_S_IFLNK: return EXT2_FT_SYMLINK;
    default: return EXT2_FT_UNKNOWN;
  }
}

// --- open, close, flush, statfs -----------------------------------------------------------------

/** open(path, rw) → image. Refuses what cannot be written safely (the TS side words the message). */
static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  bool rw = false;
  if (argc < 2 || !arg_str(env, argv[0], path, sizeof path)) return NULL;
  CHECK(napi_get_value_bool(env, argv[1], &rw));
  ext2_filsys fs = NULL;
  // EXT2_FLAG_EXCLUSIVE opens a block device O_EXCL, so the kernel cannot mount it meanwhile.
  int flags = EXT2_FLAG_64BITS | (rw ? EXT2_FLAG_RW | EXT2_FLAG_EXCLUSIVE : 0);
  errcode_t err = ext2fs_open2(path, NULL, flags, 0, 0, unix_io_manager, &fs);
  if (err) return throw_err(env, "cannot open as ext2/3/4", err);
  // Bad images: a superblock promising more blocks than the image holds is a truncated image.
  blk64_t devblocks = 0;
  if (ext2fs_get_device_size2(path, fs->blocksize, &devblocks) == 0 && devblocks < ext2fs_blocks_count(fs->super)) {
    char msg[200];
    snprintf(msg, sizeof msg, "truncated: the file system needs %llu blocks, the image has %llu",
             (unsigned long long)ext2fs_blocks_count(fs->super), (unsigned long long)devblocks);
    ext2fs_free(fs);
    napi_throw_error(env, "EINVAL", msg);
    return NULL;
  }
  if (rw) {
    // Writes need the allocation bitmaps (fuse2fs: main); their checksums are verified here.
    err = ext2fs_read_bitmaps(fs);
    if (err) {
      ext2fs_free(fs);
      return throw_err(env, "cannot read the allocation bitmaps", err);
    }
  }
  err = ext2fs_check_directory(fs, EXT2_ROOT_INO);
  if (err) {
    ext2fs_free(fs);
    return throw_err(env, "corrupted: the root inode is not a directory", err);
  }
  Image *img = calloc(1, sizeof *img);
  if (!img) {
    ext2fs_free(fs);
    return throw_err(env, "open", EXT2_ET_NO_MEMORY);
  }
  img->fs = fs;
  img->rw = rw;
  img->was_valid = (fs->super->s_state & EXT2_VALID_FS) != 0;
  napi_value ext;
  CHECK(napi_create_external(env, img, finalize_image, NULL, &ext));
  return ext;
}

/** describe(image) → what the superblock says, for the TS side's checks and the type shown. */
static napi_value Describe(napi_env env, napi_callback_info info) {
  Args a;
  if (!get_args(env, info, 1, &a)) return NULL;
  struct ext2_super_block *sb = a.img->fs->super;
  napi_value o;
  CHECK(napi_create_object(env, &o));
  set_num(env, o, "compat", sb->s_feature_compat);
  set_num(env, o, "incompat", sb->s_feature_incompat);
  set_num(env, o, "roCompat", sb->s_feature_ro_compat);
  set_num(env, o, "state", sb->s_state);
  set_num(env, o, "blockSize", a.img->fs->blocksize);
  set_num(env, o, "inodeSize", EXT2_INODE_SIZE(sb));
  set_num(env, o, "lastOrphan", sb->s_last_orphan);
  return o;
}

/**
 * beginWrite(image): clears EXT2_VALID_FS on disk while served read-write, as the kernel and
 * fuse2fs do, so a server that dies mid-way leaves an image e2fsck will check before trusting.
 */
static napi_value BeginWrite(napi_env env, napi_callback_info info) {
  Args a;
  if (!get_args(env, info, 1, &a)) return NULL;
  ext2_filsys fs = a.img->fs;
  fs->super->s_mnt_count++;
  fs->super->s_mtime = (uint32_t)time(NULL);
  fs->super->s_state &= ~EXT2_VALID_FS;
  ext2fs_mark_super_dirty(fs);
  errcode_t err = ext2fs_flush(fs);
  if (err) return throw_err(env, "cannot write the superblock", err);
  return NULL;
}

static napi_value Flush(napi_env env, napi_callback_info info) {
  Args a;
  if (!get_args(env, info, 1, &a)) return NULL;
  if (!a.img->rw) return NULL;
  errcode_t err = ext2fs_flush(a.img->fs);
  if (err) return throw_err(env, "flush", err);
  err = io_channel_flush(a.img->fs->io);
  if (err) return throw_err(env, "flush", err);
  return NULL;
}

/** close(image): writes everything (bitmaps, group descriptors, superblock) and marks it clean. */
static napi_value Close(napi_env env, napi_callback_info info) {
  Args a;
  if (!get_args(env, info, 1, &a)) return NULL;
  ext2_filsys fs = a.img->fs;
  if (a.img->rw && a.img->was_valid) {
    fs->super->s_state |= EXT2_VALID_FS;
    ext2fs_mark_super_dirty(fs);
  }
  a.img->fs = NULL;
  errcode_t err = ext2fs_close_free(&fs);
  if (err) return throw_err(env, "close", err);
  return NULL;
}

static napi_value Statfs(napi_env env, napi_callback_info info) {
  Args a;
  if (!get_args(env, info, 1, &a)) return NULL;
  struct ext2_super_block *sb = a.img->fs->super;
  blk64_t free = ext2fs_free_blocks_count(sb), reserved = ext2fs_r_blocks_count(sb);
  napi_value o;
  CHECK(napi_create_object(env, &o));
  set_num(env, o, "blocks", (double)ext2fs_blocks_count(sb));
  set_num(env, o, "bfree", (double)free);
  set_num(env, o, "bavail", (double)(free > reserved ? free - reserved : 0));
  set_num(env, o, "files", sb->s_inodes_count);
  set_num(env, o, "ffree", sb->s_free_inodes_count);
  set_num(env, o, "bsize", a.img->fs->blocksize);
  return o;
}

// --- inode attributes ---------------------------------------------------------------------------

/** getInode(image, ino) → { mode, uid, gid, size, links, blocks, rdev, generation, flags, atime... }. */
static napi_value GetInode(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  if (!get_args(env, info, 2, &a) || !arg_u32(env, a.argv[1], &ino)) return NULL;
  ext2_filsys fs = a.img->fs;
  if (ino < 1 || ino > fs->super->s_inodes_count) return throw_err(env, "getInode", EXT2_ET_BAD_INODE_NUM);
  struct ext2_inode_large in;
  errcode_t err = read_inode(fs, ino, &in);
  if (err) return throw_err(env, "read inode", err);
  napi_value o;
  CHECK(napi_create_object(env, &o));
  set_num(env, o, "mode", in.i_mode);
  set_num(env, o, "uid", inode_uid(in));
  set_num(env, o, "gid", inode_gid(in));
  set_num(env, o, "size", (double)EXT2_I_SIZE(&in));
  set_num(env, o, "links", in.i_links_count);
  set_num(env, o, "blocks", (double)ext2fs_get_stat_i_blocks(fs, EXT2_INODE(&in)));
  set_num(env, o, "rdev", (LINUX_S_ISCHR(in.i_mode) || LINUX_S_ISBLK(in.i_mode)) ? decode_rdev(&in) : 0);
  set_num(env, o, "generation", in.i_generation);
  set_num(env, o, "flags", in.i_flags);
  set_num(env, o, "dtime", in.i_dtime);
  get_time(env, o, "atime", in.i_atime, FITS(fs, &in, i_atime_extra) ? &in.i_atime_extra : NULL);
  get_time(env, o, "mtime", in.i_mtime, FITS(fs, &in, i_mtime_extra) ? &in.i_mtime_extra : NULL);
  get_time(env, o, "ctime", in.i_ctime, FITS(fs, &in, i_ctime_extra) ? &in.i_ctime_extra : NULL);
  return o;
}

/**
 * setInode(image, ino, { mode?, uid?, gid?, links?, generation?, atime?, mtime?, ctime? }): the
 * inode fields only; sizes go through truncate() so blocks are freed by libext2fs.
 */
static napi_value SetInode(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &ino)) return NULL;
  ext2_filsys fs = a.img->fs;
  struct ext2_inode_large in;
  errcode_t err = read_inode(fs, ino, &in);
  if (err) return throw_err(env, "read inode", err);
  napi_value o = a.argv[2];
  double d;
  if (get_opt_num(env, o, "mode", &d)) in.i_mode = (uint16_t)d;
  if (get_opt_num(env, o, "uid", &d)) {
    in.i_uid = (uint16_t)((uint32_t)d & 0xffff);
    ext2fs_set_i_uid_high(in, (uint32_t)d >> 16);
  }
  if (get_opt_num(env, o, "gid", &d)) {
    in.i_gid = (uint16_t)((uint32_t)d & 0xffff);
    ext2fs_set_i_gid_high(in, (uint32_t)d >> 16);
  }
  if (get_opt_num(env, o, "links", &d)) in.i_links_count = (uint16_t)d;
  if (get_opt_num(env, o, "generation", &d)) in.i_generation = (uint32_t)d;
  int64_t s;
  uint32_t ns;
  if (get_opt_time(env, o, "atime", &s, &ns)) put_time(s, ns, &in.i_atime, FITS(fs, &in, i_atime_extra) ? &in.i_atime_extra : NULL);
  if (get_opt_time(env, o, "mtime", &s, &ns)) put_time(s, ns, &in.i_mtime, FITS(fs, &in, i_mtime_extra) ? &in.i_mtime_extra : NULL);
  if (get_opt_time(env, o, "ctime", &s, &ns)) put_time(s, ns, &in.i_ctime, FITS(fs, &in, i_ctime_extra) ? &in.i_ctime_extra : NULL);
  err = write_inode(fs, ino, &in);
  if (err) return throw_err(env, "write inode", err);
  return NULL;
}

/**
 * newInode(image, dir, mode, uid, gid, rdev, generation, [sec, nsec]) → ino: allocates and writes
 * a regular file, device, fifo or socket inode with one link, not yet in any directory (fuse2fs:
 * op_create / op_mknod). Regular files on extent file systems get an empty extent tree.
 */
static napi_value NewInode(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t dir, mode, uid, gid, rdev, gen;
  if (!get_args(env, info, 8, &a) || !arg_u32(env, a.argv[1], &dir) || !arg_u32(env, a.argv[2], &mode)
      || !arg_u32(env, a.argv[3], &uid) || !arg_u32(env, a.argv[4], &gid) || !arg_u32(env, a.argv[5], &rdev)
      || !arg_u32(env, a.argv[6], &gen)) return NULL;
  ext2_filsys fs = a.img->fs;
  ext2_ino_t ino;
  errcode_t err = ext2fs_new_inode(fs, dir, (int)mode, NULL, &ino);
  if (err) return throw_err(env, "allocate inode", err);
  struct ext2_inode_large in;
  memset(&in, 0, sizeof in);
  in.i_mode = (uint16_t)mode;
  in.i_links_count = 1;
  in.i_uid = (uint16_t)(uid & 0xffff);
  ext2fs_set_i_uid_high(in, uid >> 16);
  in.i_gid = (uint16_t)(gid & 0xffff);
  ext2fs_set_i_gid_high(in, gid >> 16);
  if (LINUX_S_ISCHR(mode) || LINUX_S_ISBLK(mode)) encode_rdev(&in, rdev);
  if (EXT2_INODE_SIZE(fs->super) > EXT2_GOOD_OLD_INODE_SIZE) in.i_extra_isize = sizeof in - EXT2_GOOD_OLD_INODE_SIZE;
  // ext2fs_write_new_inode zeroes the rest of an on-disk inode larger than ours and sets crtime.
  err = ext2fs_write_new_inode(fs, ino, EXT2_INODE(&in));
  if (err) return throw_err(env, "write new inode", err);
  err = read_inode(fs, ino, &in);
  if (err) return throw_err(env, "read new inode", err);
  if (LINUX_S_ISREG(mode) && ext2fs_has_feature_extents(fs->super)) {
    // ext2fs_extent_open2 on an inode without blocks writes an empty extent header into i_block
    // and sets EXT4_EXTENTS_FL (fuse2fs: op_create).
    ext2_extent_handle_t h;
    in.i_flags &= ~EXT4_EXTENTS_FL;
    err = ext2fs_extent_open2(fs, ino, EXT2_INODE(&in), &h);
    if (err) return throw_err(env, "init extents", err);
    ext2fs_extent_free(h);
  }
  int64_t s;
  uint32_t ns;
  in.i_generation = gen;
  if (get_opt_time(env, a.argv[7], "now", &s, &ns)) {
    int fits = FITS(fs, &in, i_crtime_extra);
    put_time(s, ns, &in.i_atime, fits ? &in.i_atime_extra : NULL);
    put_time(s, ns, &in.i_mtime, fits ? &in.i_mtime_extra : NULL);
    put_time(s, ns, &in.i_ctime, fits ? &in.i_ctime_extra : NULL);
    if (fits) put_time(s, ns, &in.i_crtime, &in.i_crtime_extra);
  }
  err = write_inode(fs, ino, &in);
  if (err) return throw_err(env, "write new inode", err);
  ext2fs_inode_alloc_stats2(fs, ino, +1, 0);
  napi_value r;
  CHECK(napi_create_uint32(env, ino, &r));
  return r;
}

/** mkdir(image, parent) → ino: a new directory with "." and "..", parent's link count raised, unnamed. */
static napi_value Mkdir(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t parent;
  if (!get_args(env, info, 2, &a) || !arg_u32(env, a.argv[1], &parent)) return NULL;
  ext2_filsys fs = a.img->fs;
  ext2_ino_t ino;
  // Allocated here rather than by ext2fs_mkdir so its number is known; with name NULL,
  // ext2fs_mkdir makes the directory and counts it in the parent but links it nowhere, and the TS
  // side links it with addEntry (which can grow the parent).
  errcode_t err = ext2fs_new_inode(fs, parent, LINUX_S_IFDIR | 0755, NULL, &ino);
  if (err) return throw_err(env, "allocate inode", err);
  err = ext2fs_mkdir(fs, parent, ino, NULL);
  if (err) return throw_err(env, "mkdir", err);
  napi_value r;
  CHECK(napi_create_uint32(env, ino, &r));
  return r;
}

/** symlink(image, parent, target) → ino: a fast (in i_block), inline or one-block symlink, unnamed. */
static napi_value Symlink(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t parent;
  char target[4100];
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &parent) || !arg_str(env, a.argv[2], target, sizeof target)) return NULL;
  ext2_filsys fs = a.img->fs;
  ext2_ino_t ino;
  errcode_t err = ext2fs_new_inode(fs, parent, LINUX_S_IFLNK | 0777, NULL, &ino);
  if (err) return throw_err(env, "allocate inode", err);
  // ext2fs_symlink picks fast (< 60 bytes in i_block), inline data, or a block; with name NULL it
  // links nothing (the TS side does, growing the directory if needed).
  err = ext2fs_symlink(fs, parent, ino, NULL, target);
  if (err) return throw_err(env, "symlink", err);
  napi_value r;
  CHECK(napi_create_uint32(env, ino, &r));
  return r;
}

/** readlink(image, ino) → the target, from i_block (fast), inline data, or the data blocks. */
static napi_value Readlink(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  if (!get_args(env, info, 2, &a) || !arg_u32(env, a.argv[1], &ino)) return NULL;
  ext2_filsys fs = a.img->fs;
  struct ext2_inode_large in;
  errcode_t err = read_inode(fs, ino, &in);
  if (err) return throw_err(env, "read inode", err);
  if (!LINUX_S_ISLNK(in.i_mode)) return throw_err(env, "readlink", EXT2_ET_INVALID_ARGUMENT);
  uint64_t size = EXT2_I_SIZE(&in);
  if (size == 0 || size >= 65536) return throw_err(env, "readlink: bad symlink size", EIO);
  char *buf = calloc(1, size + 1);
  if (!buf) return throw_err(env, "readlink", EXT2_ET_NO_MEMORY);
  if (ext2fs_is_fast_symlink(EXT2_INODE(&in))) {
    memcpy(buf, (char *)in.i_block, size);
  } else if (in.i_flags & EXT4_INLINE_DATA_FL) {
    size_t got = 0;
    char *tmp = calloc(1, 65536);
    err = tmp ? ext2fs_inline_data_get(fs, ino, EXT2_INODE(&in), tmp, &got) : EXT2_ET_NO_MEMORY;
    if (!err) memcpy(buf, tmp, got < size ? got : size);
    free(tmp);
  } else {
    ext2_file_t f;
    err = ext2fs_file_open2(fs, ino, EXT2_INODE(&in), 0, &f);
    if (!err) {
      unsigned int got = 0;
      err = ext2fs_file_read(f, buf, (unsigned int)size, &got);
      ext2fs_file_close(f);
      if (!err && got != size) err = EIO;
    }
  }
  if (err) {
    free(buf);
    return throw_err(env, "readlink", err);
  }
  napi_value r;
  napi_create_string_utf8(env, buf, strnlen(buf, size), &r);
  free(buf);
  return r;
}

typedef struct {
  char *names[256];
  int n;
} NameList;

static int collect_name_cb(char *name, char *value, size_t value_len, void *priv) {
  NameList *l = priv;
  if (l->n < 256) l->names[l->n++] = strdup(name);
  return 0;
}

/** libext2fs 1.47.0 has no ext2fs_xattr_remove_all: remove each attribute by name. */
static errcode_t remove_all_xattrs(struct ext2_xattr_handle *h) {
  NameList l = {.n = 0};
  errcode_t err = ext2fs_xattrs_iterate(h, collect_name_cb, &l);
  for (int i = 0; i < l.n; i++) {
    if (!err && l.names[i]) err = ext2fs_xattr_remove(h, l.names[i]);
    free(l.names[i]);
  }
  return err;
}

/**
 * freeInode(image, ino): the last reference is gone (no name, no open handle, no lookup): free its
 * xattrs, blocks and the inode itself (fuse2fs: remove_inode, minus the link counting).
 */
static napi_value FreeInode(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  if (!get_args(env, info, 2, &a) || !arg_u32(env, a.argv[1], &ino)) return NULL;
  ext2_filsys fs = a.img->fs;
  struct ext2_inode_large in;
  errcode_t err = read_inode(fs, ino, &in);
  if (err) return throw_err(env, "read inode", err);
  if (in.i_links_count != 0 || in.i_mode == 0) return throw_err(env, "freeInode: still linked or free", EXT2_ET_INVALID_ARGUMENT);
  if (ext2fs_has_feature_ea_inode(fs->super)) {
    // xattr values kept in their own inodes (ea_inode) are released through the xattr handle.
    struct ext2_xattr_handle *h;
    err = ext2fs_xattrs_open(fs, ino, &h);
    if (!err) {
      err = ext2fs_xattrs_read(h);
      if (!err) err = remove_all_xattrs(h);
      ext2fs_xattrs_close(&h);
    }
    if (err) return throw_err(env, "free xattrs", err);
    err = read_inode(fs, ino, &in);
    if (err) return throw_err(env, "read inode", err);
  }
  err = ext2fs_free_ext_attr(fs, ino, &in);
  if (err) return throw_err(env, "free xattr block", err);
  if (ext2fs_inode_has_valid_blocks2(fs, EXT2_INODE(&in))) {
    err = ext2fs_punch(fs, ino, EXT2_INODE(&in), NULL, 0, ~0ULL);
    if (err) return throw_err(env, "free blocks", err);
    err = read_inode(fs, ino, &in);
    if (err) return throw_err(env, "read inode", err);
  }
  // dtime marks the inode deleted for e2fsck (it is not an orphan any more).
  in.i_dtime = (uint32_t)time(NULL);
  err = write_inode(fs, ino, &in);
  if (err) return throw_err(env, "write inode", err);
  ext2fs_inode_alloc_stats2(fs, ino, -1, LINUX_S_ISDIR(in.i_mode));
  return NULL;
}

// --- directories --------------------------------------------------------------------------------

typedef struct {
  napi_env env;
  napi_value arr;
  uint32_t n;
  const char *name;
  size_t name_len;
  uint32_t new_ino;
  int new_type;
  int found;
} DirWalk;

static int list_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset, int blocksize, char *buf, void *priv) {
  DirWalk *w = priv;
  int len = ext2fs_dirent_name_len(de);
  if (entry == DIRENT_DOT_FILE || entry == DIRENT_DOT_DOT_FILE) return 0;
  napi_value item, name, ino, type;
  napi_create_array_with_length(w->env, 3, &item);
  napi_create_string_utf8(w->env, de->name, (size_t)len, &name);
  napi_create_uint32(w->env, de->inode, &ino);
  napi_create_uint32(w->env, (uint32_t)ext2fs_dirent_file_type(de), &type);
  napi_set_element(w->env, item, 0, name);
  napi_set_element(w->env, item, 1, ino);
  napi_set_element(w->env, item, 2, type);
  napi_set_element(w->env, w->arr, w->n++, item);
  return 0;
}

/** readdir(image, dir) → [[name, ino, EXT2_FT_*], ...] without "." and "..". */
static napi_value Readdir(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t dir;
  if (!get_args(env, info, 2, &a) || !arg_u32(env, a.argv[1], &dir)) return NULL;
  DirWalk w = {.env = env};
  CHECK(napi_create_array(env, &w.arr));
  errcode_t err = ext2fs_dir_iterate2(a.img->fs, dir, 0, NULL, list_cb, &w);
  if (err) return throw_err(env, "read directory", err);
  return w.arr;
}

/** lookup(image, dir, name) → ino, or 0 when absent. */
static napi_value Lookup(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t dir;
  char name[1024];
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &dir) || !arg_str(env, a.argv[2], name, sizeof name)) return NULL;
  ext2_ino_t ino = 0;
  errcode_t err = ext2fs_lookup(a.img->fs, dir, name, (int)strlen(name), NULL, &ino);
  if (err == EXT2_ET_FILE_NOT_FOUND) ino = 0;
  else if (err) return throw_err(env, "lookup", err);
  napi_value r;
  CHECK(napi_create_uint32(env, ino, &r));
  return r;
}

/** addEntry(image, dir, name, ino, mode): one new name; a full directory is grown by a block and retried. */
static napi_value AddEntry(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t dir, ino, mode;
  char name[1024];
  if (!get_args(env, info, 5, &a) || !arg_u32(env, a.argv[1], &dir) || !arg_str(env, a.argv[2], name, sizeof name)
      || !arg_u32(env, a.argv[3], &ino) || !arg_u32(env, a.argv[4], &mode)) return NULL;
  ext2_filsys fs = a.img->fs;
  int ft = file_type_of(mode);
  errcode_t err = ext2fs_link(fs, dir, name, ino, ft);
  // libext2fs 1.47's ext2fs_link does not grow the directory itself (fuse2fs before
  // EXT2FS_LINK_EXPAND: expand, then link again).
  if (err == EXT2_ET_DIR_NO_SPACE) {
    err = ext2fs_expand_dir(fs, dir);
    if (!err) err = ext2fs_link(fs, dir, name, ino, ft);
  }
  if (err) return throw_err(env, "add directory entry", err);
  return NULL;
}

/** removeEntry(image, dir, name): removes one name (the inode's link count is the caller's business). */
static napi_value RemoveEntry(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t dir;
  char name[1024];
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &dir) || !arg_str(env, a.argv[2], name, sizeof name)) return NULL;
  errcode_t err = ext2fs_unlink(a.img->fs, dir, name, 0, 0);
  if (err) return throw_err(env, "remove directory entry", err);
  return NULL;
}

static int retarget_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset, int blocksize, char *buf, void *priv) {
  DirWalk *w = priv;
  if (de->inode == 0 || (size_t)ext2fs_dirent_name_len(de) != w->name_len || memcmp(de->name, w->name, w->name_len) != 0) return 0;
  de->inode = w->new_ino;
  if (w->new_type >= 0) ext2fs_dirent_set_file_type(de, w->new_type);
  w->found = 1;
  return DIRENT_CHANGED | DIRENT_ABORT;
}

/**
 * setEntry(image, dir, name, ino, mode): points an existing name (also "..") at another inode in
 * place: rename over an existing name and RENAME_EXCHANGE replace atomically, as ext4 does
 * (fs/ext4/namei.c ext4_setent). The name hash is unchanged, so htree indexes stay valid.
 */
static napi_value SetEntry(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t dir, ino, mode;
  char name[1024];
  if (!get_args(env, info, 5, &a) || !arg_u32(env, a.argv[1], &dir) || !arg_str(env, a.argv[2], name, sizeof name)
      || !arg_u32(env, a.argv[3], &ino) || !arg_u32(env, a.argv[4], &mode)) return NULL;
  ext2_filsys fs = a.img->fs;
  DirWalk w = {.env = env, .name = name, .name_len = strlen(name), .new_ino = ino, .new_type = -1};
  if (ext2fs_has_feature_filetype(fs->super)) w.new_type = file_type_of(mode);
  errcode_t err = ext2fs_dir_iterate2(fs, dir, DIRENT_FLAG_INCLUDE_EMPTY, NULL, retarget_cb, &w);
  if (err) return throw_err(env, "change directory entry", err);
  if (!w.found) return throw_err(env, "change directory entry", EXT2_ET_FILE_NOT_FOUND);
  return NULL;
}

// --- file data ----------------------------------------------------------------------------------

/** read(image, ino, offset, length) → Buffer, short only at end of file (fuse2fs: op_read). */
static napi_value Read(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino, len;
  int64_t off;
  if (!get_args(env, info, 4, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_i64(env, a.argv[2], &off)
      || !arg_u32(env, a.argv[3], &len)) return NULL;
  ext2_file_t f;
  errcode_t err = ext2fs_file_open(a.img->fs, ino, 0, &f);
  if (err) return throw_err(env, "open file", err);
  char *buf = malloc(len ? len : 1);
  unsigned int total = 0;
  if (!buf) err = EXT2_ET_NO_MEMORY;
  if (!err) err = ext2fs_file_llseek(f, (uint64_t)off, EXT2_SEEK_SET, NULL);
  while (!err && total < len) {
    unsigned int got = 0;
    err = ext2fs_file_read(f, buf + total, len - total, &got);
    if (got == 0) break;
    total += got;
  }
  errcode_t cerr = ext2fs_file_close(f);
  if (!err) err = cerr;
  if (err) {
    free(buf);
    return throw_err(env, "read", err);
  }
  napi_value r;
  void *data;
  if (napi_create_buffer_copy(env, total, buf, &data, &r) != napi_ok) {
    free(buf);
    return throw_err(env, "read", EXT2_ET_NO_MEMORY);
  }
  free(buf);
  return r;
}

/** write(image, ino, offset, buffer) → bytes written; the size grows as needed (fuse2fs: op_write). */
static napi_value Write(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  int64_t off;
  if (!get_args(env, info, 4, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_i64(env, a.argv[2], &off)) return NULL;
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, a.argv[3], &data, &len));
  ext2_file_t f;
  errcode_t err = ext2fs_file_open(a.img->fs, ino, EXT2_FILE_WRITE, &f);
  if (err) return throw_err(env, "open file", err);
  err = ext2fs_file_llseek(f, (uint64_t)off, EXT2_SEEK_SET, NULL);
  size_t total = 0;
  while (!err && total < len) {
    unsigned int done = 0;
    err = ext2fs_file_write(f, (char *)data + total, (unsigned int)(len - total), &done);
    if (done == 0) break;
    total += done;
  }
  // Closing writes the buffered block and the inode (size, i_blocks, extent root).
  errcode_t cerr = ext2fs_file_close(f);
  if (!err) err = cerr;
  if (err && total == 0) return throw_err(env, "write", err);
  napi_value r;
  CHECK(napi_create_double(env, (double)total, &r));
  return r;
}

/** truncate(image, ino, size): frees blocks past the end and zeroes the tail of the last block. */
static napi_value Truncate(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  int64_t size;
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_i64(env, a.argv[2], &size)) return NULL;
  ext2_file_t f;
  errcode_t err = ext2fs_file_open(a.img->fs, ino, EXT2_FILE_WRITE, &f);
  if (err) return throw_err(env, "open file", err);
  err = ext2fs_file_set_size2(f, (ext2_off64_t)size);
  errcode_t cerr = ext2fs_file_close(f);
  if (!err) err = cerr;
  if (err) return throw_err(env, "truncate", err);
  return NULL;
}

/**
 * punch(image, ino, firstBlock, lastBlock): unmaps the whole blocks [first, last] (a closed
 * interval, as ext2fs_punch takes it; fuse2fs: punch_helper). Partial blocks at the edges are the
 * caller's to zero; the size does not change.
 */
static napi_value Punch(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  int64_t first, last;
  if (!get_args(env, info, 4, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_i64(env, a.argv[2], &first)
      || !arg_i64(env, a.argv[3], &last)) return NULL;
  if (first < 0 || last < first) return throw_err(env, "punch", EXT2_ET_INVALID_ARGUMENT);
  struct ext2_inode_large in;
  errcode_t err = read_inode(a.img->fs, ino, &in);
  if (!err) err = ext2fs_punch(a.img->fs, ino, EXT2_INODE(&in), NULL, (blk64_t)first, (blk64_t)last);
  if (err) return throw_err(env, "punch", err);
  return NULL;
}

// --- extended attributes ------------------------------------------------------------------------

/**
 * The xattr handle reads every attribute of the inode (in-inode area and EA block) and writes them
 * all back on set/remove; POSIX ACLs are converted between the on-disk ext4 format and the
 * system.posix_acl_* xattr format by libext2fs itself (lib/ext2fs/ext_attr.c).
 */
static errcode_t xattrs(ext2_filsys fs, uint32_t ino, struct ext2_xattr_handle **h) {
  errcode_t err = ext2fs_xattrs_open(fs, ino, h);
  if (err) return err;
  err = ext2fs_xattrs_read(*h);
  if (err) ext2fs_xattrs_close(h);
  return err;
}

static napi_value XattrGet(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  char name[300];
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_str(env, a.argv[2], name, sizeof name)) return NULL;
  struct ext2_xattr_handle *h;
  errcode_t err = xattrs(a.img->fs, ino, &h);
  if (err) return throw_err(env, "read xattrs", err);
  void *val = NULL;
  size_t len = 0;
  err = ext2fs_xattr_get(h, name, &val, &len);
  ext2fs_xattrs_close(&h);
  if (err) return throw_err(env, "getxattr", err);
  napi_value r;
  void *out;
  napi_status st = napi_create_buffer_copy(env, len, len ? val : "", &out, &r);
  ext2fs_free_mem(&val);
  if (st != napi_ok) return throw_err(env, "getxattr", EXT2_ET_NO_MEMORY);
  return r;
}

static napi_value XattrSet(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  char name[300];
  if (!get_args(env, info, 4, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_str(env, a.argv[2], name, sizeof name)) return NULL;
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, a.argv[3], &data, &len));
  struct ext2_xattr_handle *h;
  errcode_t err = xattrs(a.img->fs, ino, &h);
  if (err) return throw_err(env, "read xattrs", err);
  err = ext2fs_xattr_set(h, name, len ? data : "", len);
  errcode_t cerr = ext2fs_xattrs_close(&h);
  if (!err) err = cerr;
  if (err) return throw_err(env, "setxattr", err);
  return NULL;
}

static napi_value XattrRemove(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  char name[300];
  if (!get_args(env, info, 3, &a) || !arg_u32(env, a.argv[1], &ino) || !arg_str(env, a.argv[2], name, sizeof name)) return NULL;
  struct ext2_xattr_handle *h;
  errcode_t err = xattrs(a.img->fs, ino, &h);
  if (err) return throw_err(env, "read xattrs", err);
  // ext2fs_xattr_remove succeeds for an absent key; ENODATA is what removexattr(2) must say.
  void *val = NULL;
  size_t len = 0;
  err = ext2fs_xattr_get(h, name, &val, &len);
  if (!err) {
    ext2fs_free_mem(&val);
    err = ext2fs_xattr_remove(h, name);
  }
  errcode_t cerr = ext2fs_xattrs_close(&h);
  if (!err) err = cerr;
  if (err) return throw_err(env, "removexattr", err);
  return NULL;
}

static int list_xattr_cb(char *name, char *value, size_t value_len, void *priv) {
  DirWalk *w = priv;
  napi_value s;
  napi_create_string_utf8(w->env, name, NAPI_AUTO_LENGTH, &s);
  napi_set_element(w->env, w->arr, w->n++, s);
  return 0;
}

static napi_value XattrList(napi_env env, napi_callback_info info) {
  Args a;
  uint32_t ino;
  if (!get_args(env, info, 2, &a) || !arg_u32(env, a.argv[1], &ino)) return NULL;
  struct ext2_xattr_handle *h;
  errcode_t err = xattrs(a.img->fs, ino, &h);
  if (err) return throw_err(env, "read xattrs", err);
  DirWalk w = {.env = env};
  napi_create_array(env, &w.arr);
  err = ext2fs_xattrs_iterate(h, list_xattr_cb, &w);
  ext2fs_xattrs_close(&h);
  if (err) return throw_err(env, "listxattr", err);
  return w.arr;
}

// --- module -------------------------------------------------------------------------------------

static napi_value Init(napi_env env, napi_value exports) {
  // com_err's messages for EXT2_ET_* codes.
  add_error_table(&et_ext2_error_table);
  napi_property_descriptor props[] = {
#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
    FN("open", Open), FN("describe", Describe), FN("beginWrite", BeginWrite), FN("flush", Flush),
    FN("close", Close), FN("statfs", Statfs), FN("getInode", GetInode), FN("setInode", SetInode),
    FN("newInode", NewInode), FN("mkdir", Mkdir), FN("symlink", Symlink), FN("readlink", Readlink),
    FN("freeInode", FreeInode), FN("readdir", Readdir), FN("lookup", Lookup), FN("addEntry", AddEntry),
    FN("removeEntry", RemoveEntry), FN("setEntry", SetEntry), FN("read", Read), FN("write", Write),
    FN("truncate", Truncate), FN("punch", Punch), FN("xattrGet", XattrGet), FN("xattrSet", XattrSet),
    FN("xattrRemove", XattrRemove), FN("xattrList", XattrList),
#undef FN
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
