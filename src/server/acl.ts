// POSIX access ACLs as the server's permission guard reads them: the xattr form of
// system.posix_acl_access (include/uapi/linux/posix_acl_xattr.h: a little-endian u32 version 2,
// then 8-byte entries of u16 tag, u16 perm, u32 id) and the kernel's check of one against a caller
// (posix_acl_permission() in fs/posix_acl.c). The caller's groups are its primary group only: the
// FUSE request that carried it names no others.

export const ACL_ACCESS = 'system.posix_acl_access';

const VERSION = 2;
const USER_OBJ = 0x01;
const USER = 0x02;
const GROUP_OBJ = 0x04;
const GROUP = 0x08;
const MASK = 0x10;
const OTHER = 0x20;

interface AclEntry {
  tag: number;
  perm: number;
  id: number;
}

/** The entries of an access ACL in xattr form, or undefined when it is not one. */
export function parseAcl(value: Buffer): AclEntry[] | undefined {
  if (value.length < 4 || (value.length - 4) % 8 !== 0 || value.readUInt32LE(0) !== VERSION) return undefined;
  const out: AclEntry[] = [];
  for (let off = 4; off < value.length; off += 8) {
    out.push({ tag: value.readUInt16LE(off), perm: value.readUInt16LE(off + 2) & 7, id: value.readUInt32LE(off + 4) });
  }
  return out;
}

/**
 * Whether the ACL grants every bit of mask (4 read, 2 write, 1 search) to uid/gid on a node owned
 * by owner/group; undefined when the value is no valid ACL (then the mode bits decide).
 */
export function aclPermits(value: Buffer, node: { uid: number; gid: number }, who: { uid: number; gid: number }, mask: number): boolean | undefined {
  const entries = parseAcl(value);
  if (!entries) return undefined;
  const maskEntry = entries.find((e) => e.tag === MASK);
  const masked = (perm: number) => ((maskEntry ? perm & maskEntry.perm : perm) & mask) === mask;
  let groupMatched = false;
  for (const e of entries) {
    switch (e.tag) {
      case USER_OBJ:
        if (node.uid === who.uid) return (e.perm & mask) === mask;
        break;
      case USER:
        if (e.id === who.uid) return masked(e.perm);
        break;
      case GROUP_OBJ:
      case GROUP:
        if ((e.tag === GROUP_OBJ ? node.gid : e.id) === who.gid) {
          groupMatched = true;
          if (masked(e.perm)) return true;
        }
        break;
      case OTHER:
        return !groupMatched && (e.perm & mask) === mask;
      default:
        break;
    }
  }
  return undefined;
}
