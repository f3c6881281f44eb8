/**
 * @file The environment a run was trained in — backend and adapter, Deno version, OS, the
 * flowgpu commit — written to the run's `env.json` so a report can say where its numbers
 * came from. Asks for nothing: the commit is read from the checkout's `.git` only when read
 * access to it is already granted (no prompt, no `git` subprocess), and is simply absent
 * when flowgpu is imported by URL or from a package.
 * @module
 */
import { getBackend } from "../backend/select.ts";

/** What {@linkcode runEnvironment} records. */
export interface RunEnvironment {
  /** Backend name (`webgpu` or `cpu`). */
  backend: string;
  /** The backend's description of its device (e.g. `webgpu: llvmpipe (LLVM 15…) [fallback]`). */
  adapter: string;
  /** Deno version, or null outside Deno. */
  deno: string | null;
  /** `os arch`, or the browser's user agent outside Deno. */
  os: string;
  /** The flowgpu commit (full hash, `-dirty` not checked), or null when it cannot be read. */
  commit: string | null;
  /** The branch checked out, when `commit` is known and HEAD is on one. */
  branch?: string;
  /** When this was recorded (ISO 8601, UTC). */
  recorded: string;
}

type DenoLike = typeof Deno;
const denoOf = () => (globalThis as { Deno?: DenoLike }).Deno;

/** Read a text file only when read access is already granted; null otherwise (never prompts). */
function readGranted(d: DenoLike, path: string): string | null {
  try {
    if (d.permissions.querySync({ name: "read", path }).state !== "granted") return null;
    return d.readTextFileSync(path);
  } catch {
    return null;
  }
}

/**
 * The commit of the git checkout at `root` (a `file:` URL of a directory), reading `.git`
 * directly (plain checkouts and `git worktree`s, loose and packed refs). Null when the
 * checkout cannot be read without asking for a permission, or `root` is not a file URL.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gitCommit } from "./env.ts";
 * const dir = await Deno.makeTempDir();
 * const hash = "0123456789abcdef0123456789abcdef01234567";
 * await Deno.mkdir(`${dir}/.git/refs/heads`, { recursive: true });
 * await Deno.writeTextFile(`${dir}/.git/HEAD`, "ref: refs/heads/main\n");
 * await Deno.writeTextFile(`${dir}/.git/packed-refs`, `# pack-refs\n${hash} refs/heads/main\n`);
 * assert.deepEqual(gitCommit(new URL(`file://${dir}/`)), { commit: hash, branch: "main" });
 * assert.equal(gitCommit(new URL("https://example.com/flowgpu/")), null);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function gitCommit(root: URL): { commit: string; branch?: string } | null {
  const d = denoOf();
  if (!d || root.protocol !== "file:") return null;
  const base = decodeURIComponent(root.pathname).replace(/\/+$/, "");
  let gitDir = `${base}/.git`;
  const dotGit = readGranted(d, gitDir); // a file in a worktree: "gitdir: <path>"
  if (dotGit !== null) {
    const m = /^gitdir:\s*(.+)$/m.exec(dotGit);
    if (!m) return null;
    gitDir = m[1]!.trim().startsWith("/") ? m[1]!.trim() : `${base}/${m[1]!.trim()}`;
  }
  const head = readGranted(d, `${gitDir}/HEAD`)?.trim();
  if (!head) return null;
  if (/^[0-9a-f]{40,64}$/.test(head)) return { commit: head };
  const ref = /^ref:\s*(\S+)$/.exec(head)?.[1];
  if (!ref) return null;
  const common = readGranted(d, `${gitDir}/commondir`)?.trim();
  const commonDir = common ? (common.startsWith("/") ? common : `${gitDir}/${common}`) : gitDir;
  const branch = ref.replace(/^refs\/heads\//, "");
  for (const dir of [gitDir, commonDir]) {
    const loose = readGranted(d, `${dir}/${ref}`)?.trim();
    if (loose && /^[0-9a-f]{40,64}$/.test(loose)) return { commit: loose, branch };
  }
  const packed = readGranted(d, `${commonDir}/packed-refs`) ?? "";
  for (const line of packed.split("\n")) {
    const [hash, name] = line.trim().split(" ");
    if (name === ref && /^[0-9a-f]{40,64}$/.test(hash ?? "")) return { commit: hash!, branch };
  }
  return null;
}

/**
 * The environment of this process, for a run's `env.json`: backend and adapter (call after
 * `init()` so it names the device in use), Deno version, OS and the flowgpu commit. Needs no
 * permission and never prompts; fields it cannot learn are null.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { getBackend, runEnvironment } from "../../mod.ts";
 * const env = runEnvironment();
 * assert.equal(env.backend, getBackend().name);
 * assert.equal(env.adapter, getBackend().description);
 * assert.equal(env.deno, Deno.version.deno);
 * assert.equal(env.os, `${Deno.build.os} ${Deno.build.arch}`);
 * assert.ok(env.commit === null || /^[0-9a-f]{40}/.test(env.commit));
 * ```
 */
export function runEnvironment(): RunEnvironment {
  const be = getBackend();
  const d = denoOf();
  const git = gitCommit(new URL("../../", import.meta.url));
  const ua = (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent;
  return {
    backend: be.name,
    adapter: be.description,
    deno: d?.version?.deno ?? null,
    os: d?.build ? `${d.build.os} ${d.build.arch}` : ua ?? "unknown",
    commit: git?.commit ?? null,
    ...(git?.branch ? { branch: git.branch } : {}),
    recorded: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  };
}
