#!/usr/bin/env node
// Independent reference for storage/: imports a file or directory the way kubo's
//   ipfs add -r --cid-version=1 --raw-leaves PATH
// does (sha2-256, raw leaves, 256 KiB fixed chunks, balanced DAG with at most 174 links per
// node, dag-pb directories with sorted links, HAMT sharding above 256 KiB of links like kubo)
// and prints ONE JSON line:
//   {"root": "<CIDv1 base32>", "blocks": ["<CIDv1 base32>", ...], "count": N}
// `blocks` lists every block written, in emission order, duplicates included (with the
// importer's concurrency set to 1 so the order is deterministic: files in path order, each
// file's leaves in order then its internal nodes bottom-up; empty directories where they
// occur; the other directories after all files, children before parents, root last).
//
// Usage: node reference.mjs [--hidden] [--car OUT.car] PATH
//   PATH a file:      the file's own CID is the root (no wrapping directory).
//   PATH a directory: the directory itself is the root; entries are named by their paths
//                     relative to it; empty directories are included; symbolic links are
//                     stored as UnixFS symlinks (not followed), as kubo's `add -r` does.
//   --hidden          include entries whose name starts with '.', like kubo's `--hidden`;
//                     without it they are skipped, as kubo skips them by default.
//   --car OUT.car     also write the blocks (each once, in first-emission order) to a CARv1
//                     file whose single root is `root` (for `dag/import` tests).
// Files are streamed in 256 KiB reads; nothing holds a whole file in memory.
import { createReadStream, createWriteStream } from 'node:fs'
import { lstat, open, readdir, readlink, stat } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { once } from 'node:events'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { CarWriter } from '@ipld/car/writer'
import { CID } from 'multiformats/cid'

const CHUNK_SIZE = 262144
const MAX_LINKS = 174

// kubo's parameters for `ipfs add --cid-version=1 --raw-leaves` (boxo defaults).
export const IMPORTER_OPTIONS = Object.freeze({
  profile: 'unixfs-v0-2015', // kubo's legacy layout: links-first dag-pb, links-bytes shard estimate
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  wrapWithDirectory: false,
  shardSplitThresholdBytes: 262144,
  shardSplitStrategy: 'links-bytes',
  fileImportConcurrency: 1,
  blockWriteConcurrency: 1
})

function importerOptions () {
  return {
    ...IMPORTER_OPTIONS,
    chunker: fixedSize({ chunkSize: CHUNK_SIZE }),
    layout: balanced({ maxChildrenPerNode: MAX_LINKS })
  }
}

function fileContent (absPath) {
  // Opened lazily, when the importer starts reading this file.
  return (async function * () {
    for await (const buf of createReadStream(absPath, { highWaterMark: CHUNK_SIZE })) {
      yield new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
    }
  })()
}

async function listDir (absDir, hidden) {
  const names = (await readdir(absDir)).filter(name => hidden || !name.startsWith('.'))
  return names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
}

// Directories are only given to the importer as candidates when they are empty: a non-empty
// one is created from its children's paths and written once, when the tree is flushed.
// (A directory candidate makes the importer write an empty-directory block straight away,
// which for a non-empty directory would be a block that is not part of the final DAG.)
async function * walk (absDir, relDir, hidden) {
  const names = await listDir(absDir, hidden)
  if (names.length === 0) {
    yield { path: relDir }
    return
  }
  for (const name of names) {
    const abs = join(absDir, name)
    const rel = `${relDir}/${name}`
    const st = await lstat(abs)
    if (st.isSymbolicLink()) {
      yield { path: rel, link: await readlink(abs) }
    } else if (st.isDirectory()) {
      yield * walk(abs, rel, hidden)
    } else if (st.isFile()) {
      yield { path: rel, content: fileContent(abs) }
    } else {
      throw new Error(`unsupported file type: ${abs}`)
    }
  }
}

async function * candidates (absPath, st, hidden) {
  if (st.isDirectory()) {
    yield * walk(absPath, basename(absPath) || 'root', hidden)
  } else if (st.isFile()) {
    yield { path: basename(absPath), content: fileContent(absPath) }
  } else {
    throw new Error(`not a regular file or directory: ${absPath}`)
  }
}

class CarSink {
  // Streams a CARv1 with a placeholder root, then rewrites the header with the real root
  // (same byte length: both are 36-byte CIDv1 sha2-256).
  constructor (path) {
    this.path = path
    this.seen = new Set()
    const placeholder = CID.parse('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')
    const { writer, out } = CarWriter.create([placeholder])
    this.writer = writer
    this.file = createWriteStream(path)
    this.pump = (async () => {
      for await (const chunk of out) {
        if (!this.file.write(chunk)) await once(this.file, 'drain')
      }
      this.file.end()
      await once(this.file, 'finish')
    })()
  }

  async put (cid, bytes) {
    const key = cid.toString()
    if (this.seen.has(key)) return
    this.seen.add(key)
    await this.writer.put({ cid, bytes })
  }

  async finish (root) {
    await this.writer.close()
    await this.pump
    const fd = await open(this.path, 'r+')
    try {
      await CarWriter.updateRootsInFile(fd, [root])
    } finally {
      await fd.close()
    }
  }
}

export async function reference (path, { hidden = false, carPath = null } = {}) {
  const absPath = resolve(path)
  const st = await stat(absPath) // PATH itself is followed if it is a symlink (like --dereference-args)
  const blocks = []
  const car = carPath ? new CarSink(carPath) : null
  const blockstore = {
    async put (cid, bytes) {
      blocks.push(cid.toString())
      if (car) await car.put(cid, bytes)
      return cid
    }
  }
  let last = null
  for await (const entry of importer(candidates(absPath, st, hidden), blockstore, importerOptions())) {
    last = entry
  }
  if (last == null) throw new Error('importer produced nothing')
  if (car) await car.finish(last.cid)
  return { root: last.cid.toV1().toString(), blocks, count: blocks.length }
}

async function main (argv) {
  let hidden = false
  let carPath = null
  const rest = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--hidden') hidden = true
    else if (argv[i] === '--car') carPath = argv[++i]
    else rest.push(argv[i])
  }
  if (rest.length !== 1 || (carPath === undefined)) {
    process.stderr.write('usage: node reference.mjs [--hidden] [--car OUT.car] PATH\n')
    process.exit(2)
  }
  const result = await reference(rest[0], { hidden, carPath })
  process.stdout.write(JSON.stringify(result) + '\n')
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('reference.mjs')) {
  main(process.argv.slice(2)).catch(err => {
    process.stderr.write(`reference.mjs: ${err.stack ?? err}\n`)
    process.exit(1)
  })
}
