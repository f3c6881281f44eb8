/**
 * @file The one startup path of every `deno task` entry point: run `main(Deno.args)` and
 * turn the errors a user can fix into a one-line message and an exit status, instead of a
 * stack trace. Engine initialisation that must precede any task belongs here, once.
 * @module
 */

/** Options of {@linkcode runTask} (for tests; a task passes none). */
export interface RunTaskOptions {
  /** Arguments (default `Deno.args`). */
  argv?: readonly string[];
  /** Where the message goes (default console.error). */
  error?: (line: string) => void;
  /** How to exit (default `Deno.exit`). */
  exit?: (code: number) => void;
}

/**
 * The exit status for an error a user can act on, or null for a bug (re-thrown with its
 * stack): 2 for a `RangeError`/`TypeError` (bad flag or input) or a `SyntaxError` (malformed
 * JSON in an input file), or the error's own numeric `exitCode` (3 for a training run that
 * diverged to NaN/Inf).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { exitCodeOf } from "./mod.ts";
 * assert.equal(exitCodeOf(new RangeError("bad --lr")), 2);
 * assert.equal(exitCodeOf(Object.assign(new Error("NaN"), { exitCode: 3 })), 3);
 * assert.equal(exitCodeOf(new Error("bug")), null);
 * ```
 */
export function exitCodeOf(e: unknown): number | null {
  const code = (e as { exitCode?: unknown })?.exitCode;
  if (typeof code === "number" && Number.isInteger(code) && code > 0) return code;
  if (e instanceof RangeError || e instanceof TypeError || e instanceof SyntaxError) return 2;
  return null;
}

/**
 * Run a task's `main` with the command-line arguments; user errors print
 * `<name>: <message>` and exit with {@linkcode exitCodeOf}'s status.
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
  try {
    await main([...(opts.argv ?? Deno.args)]);
  } catch (e) {
    const code = exitCodeOf(e);
    if (code === null) throw e;
    (opts.error ?? ((l: string) => console.error(l)))(`${name}: ${(e as Error).message}`);
    (opts.exit ?? ((c: number) => Deno.exit(c)))(code);
  }
}
