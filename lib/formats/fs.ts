/**
 * @file Atomic file writes: write a temporary sibling, flush it, then rename over the
 * target, so a reader never sees a partial file and a failed write leaves the previous
 * content in place.
 * @module
 */
import { denoApi, isNotFound } from "../_util.ts";

/** @internal Parent directory of a path ("." when it has none). */
export function dirname(path: string): string {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : path.slice(0, i);
}

/** @internal Join path pieces with "/". */
export function joinPath(...parts: string[]): string {
  return parts.filter((p) => p !== "").join("/").replace(/\/{2,}/g, "/");
}

function randomSuffix(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Write `data` to `path` atomically: the bytes go to `path.tmp-<random>` in the same
 * directory (created if missing), are flushed to disk, and the temporary file is renamed
 * over `path`. If anything fails, the temporary file is removed and `path` keeps its
 * previous content. A `ReadableStream` may be passed for large outputs.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { atomicWrite } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await atomicWrite(`${dir}/sub/hello.txt`, "hello");
 * assert.equal(await Deno.readTextFile(`${dir}/sub/hello.txt`), "hello");
 * // Only the file itself: the temporary file was renamed into place.
 * assert.deepEqual([...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name), ["hello.txt"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function atomicWrite(
  path: string,
  data: Uint8Array | string | ReadableStream<Uint8Array>,
): Promise<void> {
  if (typeof path !== "string" || path === "") {
    throw new TypeError(`Expected path to be a non-empty string but found ${path}`);
  }
  const fs = denoApi(`Writing ${path}`, "keep the encoded bytes (e.g. offer them as a download)");
  await fs.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${randomSuffix()}`;
  let file: Deno.FsFile | undefined;
  try {
    file = await fs.open(tmp, { write: true, createNew: true });
    if (typeof data === "string") data = new TextEncoder().encode(data);
    if (data instanceof Uint8Array) {
      let off = 0;
      while (off < data.length) off += await file.write(data.subarray(off));
    } else {
      const reader = data.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        let off = 0;
        while (off < value.length) off += await file.write(value.subarray(off));
      }
    }
    // Flush before the rename: otherwise a crash can leave the new name pointing at
    // a file whose data never reached the disk.
    await file.syncData();
    file.close();
    file = undefined;
    await fs.rename(tmp, path);
  } catch (e) {
    try {
      file?.close();
    } catch { /* already closed */ }
    await fs.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Create a directory and its parents if missing (no error when it exists).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ensureDir } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await ensureDir(`${dir}/a/b`);
 * await ensureDir(`${dir}/a/b`); // already there: no error
 * assert.ok((await Deno.stat(`${dir}/a/b`)).isDirectory);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function ensureDir(path: string): Promise<void> {
  await denoApi("ensureDir", "keep files in memory").mkdir(path, { recursive: true });
}

/** @internal Whether a path exists (false on NotFound). */
export async function exists(path: string): Promise<boolean> {
  try {
    await denoApi("exists", "keep files in memory").stat(path);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}
