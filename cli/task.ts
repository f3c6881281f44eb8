/**
 * @file The one startup path of every `deno task` entry point: run `main(Deno.args)` and
 * turn the errors a user can fix into a one-line message and an exit status, instead of a
 * stack trace (`--debug` shows it); stop cleanly when the process is told to stop
 * (SIGINT, SIGTERM, SIGHUP) or is orphaned (its parent, e.g. `deno task`, was killed with
 * SIGKILL and cannot forward anything). Engine initialisation that must precede any task
 * belongs here, once.
 * @module
 */
import { configureTracing, init } from "../mod.ts";

/** Options of {@linkcode runTask} (for tests; a task passes none). */
export interface RunTaskOptions {
  /**
   * Arguments (default `Deno.args`). `--debug` is taken out and shows stack traces (and why a
   * training step runs eagerly instead of replaying its trace); `--no-trace` is taken out and
   * makes every training step run eagerly (`configureTracing`).
   */
  argv?: readonly string[];
  /** Where the message goes (default console.error). */
  error?: (line: string) => void;
  /** How to exit (default `Deno.exit`). */
  exit?: (code: number) => void;
  /**
   * Watch for a stop request (signals, parent exit) while `main` runs. Default: only when
   * `exit` is not given, i.e. when the task owns the process.
   */
  watch?: boolean;
  /** The parent PID now (default `Deno.ppid`); its change means the parent exited. */
  parentPid?: () => number;
  /** How often the parent is checked, in ms (default 500). */
  pollMs?: number;
  /**
   * How long a stopping task may take to reach a step boundary and save before the process
   * exits anyway, in ms (default 30 000). A second signal exits at once.
   */
  graceMs?: number;
  /** The command line a permission error suggests (default: from deno.json's task). */
  commandLine?: () => Promise<string[] | null>;
}

/** Why a task was asked to stop: the `reason` of {@linkcode taskSignal}. */
export class TaskStop extends Error {
  /** Exit status: 128 + the signal number (130 SIGINT, 143 SIGTERM, 129 parent gone). */
  readonly exitCode: number;
  /** Describe the request. */
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = "TaskStop";
    this.exitCode = exitCode;
  }
}

let current: AbortSignal | undefined;

/**
 * The stop request of the running task: aborted (with a {@linkcode TaskStop} reason) on
 * SIGINT, SIGTERM or SIGHUP, or when the parent process exits. Training tasks pass it to
 * `fit`, which then saves a checkpoint at the next step boundary and stops, so the run can
 * be continued with `--resume`. Undefined outside {@linkcode runTask}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runTask, taskSignal } from "./mod.ts";
 * assert.equal(taskSignal(), undefined);
 * await runTask("demo", async () => assert.ok(taskSignal() instanceof AbortSignal), {
 *   argv: [], exit: () => {},
 * });
 * ```
 */
export function taskSignal(): AbortSignal | undefined {
  return current;
}

/**
 * The exit status for an error a user can act on, or null for a bug (re-thrown with its
 * stack): 2 for a `RangeError`/`TypeError` (bad flag or input), a `SyntaxError` (malformed
 * JSON in an input file) or a file-system error naming a path (`NotFound`,
 * `PermissionDenied`, `NotCapable` …), or the error's own numeric `exitCode` (3 for a
 * training run that diverged to NaN/Inf, 128 + signal for a stopped one).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { exitCodeOf } from "./mod.ts";
 * assert.equal(exitCodeOf(new RangeError("bad --lr")), 2);
 * assert.equal(exitCodeOf(new Deno.errors.NotFound("open 'x'")), 2);
 * assert.equal(exitCodeOf(Object.assign(new Error("NaN"), { exitCode: 3 })), 3);
 * assert.equal(exitCodeOf(new Error("bug")), null);
 * ```
 */
export function exitCodeOf(e: unknown): number | null {
  const code = (e as { exitCode?: unknown })?.exitCode;
  if (typeof code === "number" && Number.isInteger(code) && code > 0) return code;
  if (e instanceof RangeError || e instanceof TypeError || e instanceof SyntaxError) return 2;
  if (e instanceof Error && FS_ERRORS.has(e.name)) return 2;
  return null;
}

const FS_ERRORS = new Set([
  "NotFound",
  "PermissionDenied",
  "NotCapable",
  "IsADirectory",
  "NotADirectory",
  "AlreadyExists",
]);

/** The `NotCapable` error in `e` or its causes (or a message that quotes one). */
function notCapable(e: unknown): Error | null {
  for (let x = e, i = 0; x instanceof Error && i < 8; x = x.cause, i++) {
    if (x.name === "NotCapable") return x;
  }
  return e instanceof Error && /Requires \w+ access to "/.test(e.message) ? e : null;
}

const quote = (a: string) => /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`;

/**
 * The `deno run …` command that grants what a `NotCapable` error says is missing: `cmd`
 * (the task's command from deno.json, or any `deno run` command) with the permission added
 * to its `--allow-<kind>` list (or a new flag), and `args` appended. A path under a path
 * given in `args` is widened to that path, and a directory given to an output flag
 * (`--output-dir`, `--out`, `--save-dir` …) gets read and write access both, so the command
 * works on the next run too. Null when the message names no permission.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { commandWithPermission } from "./mod.ts";
 * const msg = 'Requires write access to "/data/x.npz", run again with the --allow-write flag';
 * assert.equal(
 *   commandWithPermission(msg, ["deno", "run", "--allow-write=runs", "tasks/t.ts"], ["/data/x.npz"]),
 *   "deno run --allow-write=runs,/data/x.npz tasks/t.ts /data/x.npz",
 * );
 * assert.equal(
 *   commandWithPermission('Requires env access to "HOME", run again with the --allow-env flag', ["deno", "run", "t.ts"], []),
 *   "deno run --allow-env=HOME t.ts",
 * );
 * assert.equal(
 *   commandWithPermission('Requires read access to "/d/run-1"', ["deno", "run", "--allow-read=.", "t.ts"], ["--output-dir", "/d"]),
 *   "deno run --allow-write=/d --allow-read=.,/d t.ts --output-dir /d",
 * );
 * ```
 */
export function commandWithPermission(
  message: string,
  cmd: readonly string[],
  args: readonly string[],
): string | null {
  const m = /Requires (\w+) access to "([^"]*)"/.exec(message);
  if (!m) return null;
  const [, kind, missing] = m as unknown as [string, string, string];
  let what = missing;
  const kinds = [kind];
  if (kind === "read" || kind === "write") {
    // The given path the missing one lies under (flag value or `--flag=value`).
    for (let j = 0; j < args.length; j++) {
      const eq = args[j]!.indexOf("=");
      const [name, value] = args[j]!.startsWith("--") && eq > 0
        ? [args[j]!.slice(0, eq), args[j]!.slice(eq + 1)]
        : [args[j - 1] ?? "", args[j]!];
      const p = value.replace(/\/+$/, "");
      if (p && (missing === p || missing.startsWith(p + "/"))) {
        what = p;
        if (/out|save/.test(name)) kinds.splice(0, 1, "read", "write");
        break;
      }
    }
  }
  const out = [...cmd];
  for (const k of kinds) {
    const flag = k === "all" ? "--allow-all" : `--allow-${k}`;
    const i = out.findIndex((a) => a === flag || a.startsWith(`${flag}=`));
    if (k === "all") out.splice(2, 0, flag);
    else if (i < 0) out.splice(2, 0, `${flag}=${what}`);
    else if (out[i] !== flag) out[i] = `${out[i]},${what}`;
  }
  return [...out, ...args].map(quote).join(" ");
}

/** The task's command line from deno.json (the entry whose script is the main module). */
async function taskCommand(): Promise<string[] | null> {
  try {
    const main = new URL(Deno.mainModule);
    const cwd = Deno.cwd();
    const rel = main.pathname.startsWith(cwd + "/") ? main.pathname.slice(cwd.length + 1) : null;
    if (!rel) return null;
    const cfg = JSON.parse(await Deno.readTextFile("deno.json")) as { tasks?: object };
    for (const cmd of Object.values(cfg.tasks ?? {})) {
      const words = String(cmd).split(/\s+/);
      if (words[0] === "deno" && words[1] === "run" && words[words.length - 1] === rel) {
        return words;
      }
    }
  } catch { /* no deno.json, or no read access: fall back */ }
  return null;
}

/** One line (or the stack with `--debug`) for a user error. */
async function describe(
  name: string,
  e: Error,
  debug: boolean,
  argv: readonly string[],
  opts: RunTaskOptions,
): Promise<string> {
  const nc = notCapable(e);
  let line = `${name}: ${e.message}`;
  if (nc) {
    const task = await (opts.commandLine ?? taskCommand)();
    let cmd = commandWithPermission(nc.message, task ?? ["deno", "run", Deno.mainModule], argv);
    if (cmd && !task) cmd += " (with the task's other permissions too)";
    const what = /Requires \w+ access to "[^"]*"/.exec(nc.message)?.[0] ?? nc.message;
    // Deno's advice ("run again with the --allow-x flag") is not possible through `deno task`.
    const msg = e.message.replace(/,? run again with the --allow-\w+ flag/, "");
    line = `${name}: ${msg.includes(what) ? msg : `${msg}: ${what}`}` +
      (cmd ? `; \`deno task\` cannot grant it, so run: ${cmd}` : "");
  }
  if (!debug) return line;
  const chain: string[] = [];
  for (let x: unknown = e, i = 0; x instanceof Error && i < 8; x = x.cause, i++) {
    chain.push(i === 0 ? String(x.stack) : `Caused by: ${x.stack}`);
  }
  return `${line}\n${chain.join("\n")}`;
}

/**
 * Run a task's `main` with the command-line arguments; user errors print
 * `<name>: <message>` (with `--debug`: and the stack) and exit with {@linkcode exitCodeOf}'s
 * status. While `main` runs, a stop request (SIGINT/SIGTERM/SIGHUP, or the parent process
 * exiting) aborts {@linkcode taskSignal}; a task that does not stop within `graceMs`, or a
 * second signal, exits at once with 128 + the signal.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runTask } from "./mod.ts";
 * const lines: string[] = [];
 * let code = 0;
 * await runTask("demo", () => Promise.reject(new RangeError("Expected --steps >= 1")), {
 *   argv: [], error: (l) => lines.push(l), exit: (c) => { code = c; },
 * });
 * assert.deepEqual(lines, ["demo: Expected --steps >= 1"]);
 * assert.equal(code, 2);
 * ```
 */
export async function runTask(
  name: string,
  main: (argv: string[]) => Promise<unknown>,
  opts: RunTaskOptions = {},
): Promise<void> {
  const all = [...(opts.argv ?? Deno.args)];
  const debug = all.includes("--debug");
  const noTrace = all.includes("--no-trace");
  const argv = all.filter((a) => a !== "--debug" && a !== "--no-trace");
  const tracing = configureTracing({ debug, ...(noTrace ? { enabled: false } : {}) });
  const say = opts.error ?? ((l: string) => {
    try {
      console.error(l);
    } catch { /* stderr gone with the parent */ }
  });
  const exit = opts.exit ?? ((c: number) => Deno.exit(c));
  const stop = new AbortController();
  const undo = (opts.watch ?? opts.exit === undefined)
    ? watchStop(name, stop, say, exit, opts)
    : () => {};
  const prev = current;
  current = stop.signal;
  try {
    // The engine picks its backend here (WebGPU when an adapter exists, else the CPU with a
    // warning): importing the library never requests an adapter.
    await init();
    await main(argv);
  } catch (e) {
    const code = exitCodeOf(e);
    if (code === null || !(e instanceof Error)) throw e;
    say(await describe(name, e, debug, argv, opts));
    exit(code);
  } finally {
    current = prev;
    configureTracing(tracing);
    undo();
  }
}

const SIGNALS = [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const;

/** Install the stop watchers; returns their removal. */
function watchStop(
  name: string,
  stop: AbortController,
  say: (l: string) => void,
  exit: (c: number) => void,
  opts: RunTaskOptions,
): () => void {
  let grace: ReturnType<typeof setTimeout> | undefined;
  const request = (why: string, code: number) => {
    if (stop.signal.aborted) {
      say(`${name}: ${why} again; exiting now`);
      return exit(code);
    }
    say(`${name}: ${why}; stopping at the next step boundary (again to stop now)`);
    stop.abort(new TaskStop(why, code));
    const t = setTimeout(() => {
      say(`${name}: did not stop within ${opts.graceMs ?? 30_000} ms; exiting`);
      exit(code);
    }, opts.graceMs ?? 30_000);
    grace = t;
    Deno.unrefTimer(t);
  };
  const removers: (() => void)[] = [];
  for (const [sig, code] of SIGNALS) {
    const h = () => request(`received ${sig}`, code);
    try {
      Deno.addSignalListener(sig, h);
      removers.push(() => Deno.removeSignalListener(sig, h));
    } catch { /* not supported here (e.g. SIGHUP on Windows) */ }
  }
  const ppid = opts.parentPid ?? (() => Deno.ppid);
  const first = ppid();
  const poll = setInterval(() => {
    const now = ppid();
    if (now !== first && !stop.signal.aborted) {
      request(`parent process ${first} exited`, 129);
    }
  }, opts.pollMs ?? 500);
  Deno.unrefTimer(poll);
  return () => {
    clearInterval(poll);
    clearTimeout(grace);
    removers.forEach((r) => r());
  };
}
