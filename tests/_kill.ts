/**
 * Kill points for the kill-and-resume tests. What a killed run leaves behind is decided only
 * by which file-system mutations completed, so "SIGKILL before the k-th mutation" reaches
 * every state a kill at a random instant can leave (a torn single write aside, which the
 * loaders' checksums cover). `instrumentFs` wraps Deno's mutating file calls (open for
 * writing, FsFile.write/syncData/truncate, rename, remove, mkdir, writeFile, writeTextFile),
 * numbers them and, at the chosen one, stops before performing it.
 *
 * As a program it runs a task's `main` under `runTask`, paused at operation `k` (the
 * parent then sends SIGKILL):
 *
 *   deno run <task permissions> tests/_kill.ts <k | 0 for never> <tasks/…ts> <flags…>
 *
 * and prints `PAUSED <k> <label>` on stdout when it stops.
 */

/** One mutating file operation. */
export interface FsOp {
  /** 1-based number in the process. */
  n: number;
  /** What and on which path, e.g. `rename /r/checkpoints/step-000002.safetensors`. */
  label: string;
}

type AnyFn = (...a: unknown[]) => unknown;

/**
 * Wrap Deno's mutating file calls: `onOp(op)` runs before each; when it returns a promise,
 * the operation waits for it. Returns a function that restores the originals.
 */
export function instrumentFs(onOp: (op: FsOp) => void | Promise<void>): () => void {
  const D = Deno as unknown as Record<string, AnyFn>;
  const proto = Deno.FsFile.prototype as unknown as Record<string, AnyFn>;
  const paths = new WeakMap<object, string>();
  const restore: (() => void)[] = [];
  let n = 0;
  const gate = async (label: string) => {
    const r = onOp({ n: ++n, label });
    if (r) await r;
  };
  const wrap = (
    obj: Record<string, AnyFn>,
    name: string,
    label: (self: unknown, a: unknown[]) => string | null,
    after?: (self: unknown, a: unknown[], out: unknown) => void,
  ) => {
    const orig = obj[name]!;
    obj[name] = async function (this: unknown, ...a: unknown[]) {
      const l = label(this, a);
      if (l !== null) await gate(l);
      const out = await orig.apply(this, a);
      after?.(this, a, out);
      return out;
    };
    restore.push(() => (obj[name] = orig));
  };
  const p = (x: unknown) => String(x);
  wrap(D, "open", (_s, a) => {
    const o = (a[1] ?? {}) as Deno.OpenOptions;
    return o.write || o.append || o.create || o.createNew ? `open ${p(a[0])}` : null;
  }, (_s, a, out) => paths.set(out as object, p(a[0])));
  wrap(D, "rename", (_s, a) => `rename ${p(a[1])} <- ${p(a[0])}`);
  wrap(D, "remove", (_s, a) => `remove ${p(a[0])}`);
  wrap(D, "mkdir", (_s, a) => `mkdir ${p(a[0])}`);
  wrap(D, "writeFile", (_s, a) => `writeFile ${p(a[0])}`);
  wrap(D, "writeTextFile", (_s, a) => `writeTextFile ${p(a[0])}`);
  for (const m of ["write", "syncData", "truncate"]) {
    wrap(proto, m, (self) => `${m} ${paths.get(self as object) ?? "?"}`);
  }
  return () => restore.reverse().forEach((f) => f());
}

if (import.meta.main) {
  const [k, task, ...argv] = Deno.args;
  const stopAt = Number(k);
  instrumentFs(({ n, label }) => {
    if (n !== stopAt) return;
    Deno.stdout.writeSync(new TextEncoder().encode(`PAUSED ${n} ${label}\n`));
    setInterval(() => {}, 1000); // stay alive until the parent's SIGKILL
    return new Promise<void>(() => {});
  });
  const { runTask } = await import("../cli/mod.ts");
  const { main } = await import(new URL(`../${task}`, import.meta.url).href);
  await runTask(task!, main, { argv });
}
