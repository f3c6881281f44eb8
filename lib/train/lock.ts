/**
 * @file One writer per run directory: `<run>/.lock` holds an exclusive advisory lock
 * (flock) and the holder's PID. The OS drops the lock when its process dies, so a lock left
 * by a killed run is taken over without a PID probe (which would need `--allow-run` or
 * `/proc`); a live holder makes a second writer fail with a message naming its PID.
 * Stale `*.tmp-*` files that an interrupted atomic write left behind are removed here too,
 * since only the lock holder may decide they are stale.
 * @module
 */
import { joinPath } from "../formats/fs.ts";

/**
 * A second process (or a second `fit` in this one) tried to write a run directory that is
 * in use. A `RangeError`, so tasks exit with status 2 and a one-line message.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { RunLockedError } from "../../mod.ts";
 * const e = new RunLockedError("runs/a", 123);
 * assert.match(e.message, /runs\/a is in use by process 123/);
 * ```
 */
export class RunLockedError extends RangeError {
  /** The run directory. */
  readonly dir: string;
  /** PID of the holder (null when the lock file names none). */
  readonly pid: number | null;
  /** Describe the conflict. */
  constructor(dir: string, pid: number | null) {
    super(
      `Run directory ${dir} is in use by process ${pid ?? "(unknown PID)"}` +
        ` (lock file ${joinPath(dir, ".lock")}); wait for it to finish or stop it first`,
    );
    this.name = "RunLockedError";
    this.dir = dir;
    this.pid = pid;
  }
}

/** A held run-directory lock; `release()` frees it (idempotent). */
export interface RunLock {
  /** The lock file. */
  readonly path: string;
  /** PID named by a stale lock that was taken over, else null. */
  readonly tookOverFrom: number | null;
  /** Unlock and clear the PID (the file stays, so no other opener races an unlink). */
  release(): Promise<void>;
}

// flock is per open file description, which already refuses a second `fit` in the same
// process; the set makes that independent of how the platform implements file locks.
const held = new Set<string>();

async function readPid(path: string): Promise<number | null> {
  try {
    const n = parseInt((await Deno.readTextFile(path)).trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Take the run directory's lock, or throw a {@linkcode RunLockedError} naming the holder.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { lockRunDir, RunLockedError } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const lock = await lockRunDir(dir);
 * await assert.rejects(lockRunDir(dir), RunLockedError);
 * await lock.release();
 * await (await lockRunDir(dir)).release(); // free again
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function lockRunDir(dir: string): Promise<RunLock> {
  const path = joinPath(dir, ".lock");
  let key = path;
  try {
    key = await Deno.realPath(dir) + "/.lock";
  } catch { /* the open below reports a missing directory */ }
  if (held.has(key)) throw new RunLockedError(dir, Deno.pid);
  const file = await Deno.open(path, { read: true, write: true, create: true });
  let ok = false;
  try {
    ok = await file.tryLock(true);
  } catch (e) {
    file.close();
    throw e;
  }
  if (!ok) {
    file.close();
    throw new RunLockedError(dir, await readPid(path));
  }
  const previous = await readPid(path);
  held.add(key);
  await file.truncate(0);
  await file.seek(0, Deno.SeekMode.Start);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  let released = false;
  return {
    path,
    tookOverFrom: previous !== null && previous !== Deno.pid ? previous : null,
    async release() {
      if (released) return;
      released = true;
      held.delete(key);
      try {
        await file.truncate(0);
        await file.unlock();
      } finally {
        file.close();
      }
    },
  };
}

/**
 * Remove `*.tmp-*` files (left by atomic writes that were interrupted) under `dir`,
 * recursively; returns the paths removed. Call it only while holding the run's lock: a live
 * writer's temporary file looks exactly the same.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { removeStaleTemps } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/metrics.jsonl.tmp-abc123`, "torn");
 * await Deno.writeTextFile(`${dir}/config.json`, "{}");
 * assert.equal((await removeStaleTemps(dir)).length, 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: Deno.DirEntry[] = [];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    for (const e of entries) {
      const p = joinPath(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile && /\.tmp-[0-9a-f]+$/.test(e.name)) {
        await Deno.remove(p).catch(() => {});
        removed.push(p);
      }
    }
  };
  await walk(dir);
  return removed;
}
