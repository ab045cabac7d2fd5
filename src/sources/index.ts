// The source registry: turns a source spec from the command line ("mem:", "/srv/data",
// "passthrough:/srv/data", "ext4:disk.img", "fat:usb.img") into a Vfs. The one place that knows every type.

import { FsError, Errno } from '../lib/errno.js';
import type { Vfs } from '../vfs/types.js';
import { MemoryFs } from './memory.js';
import { PassthroughFs } from './passthrough.js';
import { ExtFs } from './ext.js';
import { EXT_RW_HINT, ExtRwFs, ext2fsAddon } from './ext-rw.js';
import { IsoFs } from './iso9660.js';
import { FatFs } from './fat.js';

export interface SourceType {
  name: string;
  usage: string;
  open(arg: string, opts: SourceOptions): Promise<Vfs>;
}

export interface SourceOptions {
  readOnly?: boolean;
}

export const sourceTypes: readonly SourceType[] = [
  {
    name: 'passthrough',
    usage: 'passthrough:DIR or just DIR   a local directory (any file system: tmpfs, /proc, several devices)',
    open: (arg, opts) => PassthroughFs.open(arg, opts.readOnly ? { readOnly: true } : {}),
  },
  {
    name: 'mem',
    usage: 'mem:                          an empty in-memory file system',
    open: async () => new MemoryFs(),
  },
  ...(['ext2', 'ext3', 'ext4'] as const).map((name) => ({
    name,
    usage: `${name}:IMAGE|DEVICE`.padEnd(30) + 'an ext2/3/4 image or block device, read-write through libext2fs (the type shown comes from the superblock)',
    open: (arg: string, opts: SourceOptions) => openExt(arg, opts),
  })),
  {
    name: 'iso9660',
    usage: 'iso9660:IMAGE|DEVICE          an ISO 9660 image or optical device (Rock Ridge, Joliet), read-only',
    open: (arg) => IsoFs.open(arg),
  },
  ...(['fat', 'vfat'] as const).map((name) => ({
    name,
    usage: `${name}:IMAGE|DEVICE`.padEnd(30) + 'a FAT12/16/32 image or block device, read-write, with long names (mounted as fuse.vfat)',
    open: (arg: string, opts: SourceOptions) => FatFs.open(arg, opts.readOnly ? { readOnly: true } : {}),
  })),
  ...(['fat12', 'fat16', 'fat32'] as const).map((name) => ({
    name,
    usage: `${name}:IMAGE|DEVICE`.padEnd(30) + `the same, refusing an image that is not ${name.toUpperCase()}`,
    open: (arg: string, opts: SourceOptions) => FatFs.open(arg, { expect: name, ...(opts.readOnly ? { readOnly: true } : {}) }),
  })),
];

/**
 * ext2/3/4: read-write through libext2fs when its addon was built; otherwise the hand-written
 * read-only driver, saying once why the image cannot be written.
 */
async function openExt(arg: string, opts: SourceOptions): Promise<Vfs> {
  if (ext2fsAddon()) return ExtRwFs.open(arg, opts.readOnly ? { readOnly: true } : {});
  if (!opts.readOnly) process.stderr.write(`wirefs: ${arg}: served read-only: ${EXT_RW_HINT}\n`);
  return ExtFs.open(arg, { readOnly: true });
}

/** Parses and opens a source spec; failures are one-line FsErrors fit to print. */
export async function openSource(spec: string, opts: SourceOptions = {}): Promise<Vfs> {
  const m = /^([a-z0-9]+):(.*)$/s.exec(spec);
  // A bare path, or a Windows-free "name:" prefix that is not a known type but an existing path.
  const typeName = m?.[1];
  const known = sourceTypes.find((t) => t.name === typeName || (typeName === 'memory' && t.name === 'mem'));
  if (m && known) return known.open(m[2] ?? '', opts);
  if (m && !spec.startsWith('/') && !spec.startsWith('.')) {
    throw new FsError(Errno.EINVAL, `unknown source type "${typeName}" (known types: ${sourceTypes.map((t) => t.name).join(', ')})`);
  }
  return sourceTypes[0]!.open(spec, opts);
}
