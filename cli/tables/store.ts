/**
 * @file Where the rows of a results table live between runs, invocations and sessions:
 * `<output-dir>/results.jsonl`, one finished run a line, with the markdown (`--out`) and its
 * JSON rewritten after every row. Run directories do not travel with the repository but the
 * committed JSON does, so a missing `results.jsonl` starts from the JSON's rows and a session
 * adds runs to what earlier ones measured.
 * @module
 */
import { readJsonl } from "../results.ts";

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

/** Options of {@linkcode TableRows.open}. */
export interface TableRowsOptions<R> {
  /** The table's name, written into its JSON (`{ table, rows }`). */
  table: string;
  /** Where the runs and `results.jsonl` go. */
  outputDir: string;
  /** The markdown file; its JSON is the same path with `.json`. */
  out: string;
  /** The markdown of the rows. */
  render: (rows: R[]) => string;
  /** JSON indentation (kept per table so committed files diff cleanly). Default 1. */
  indent?: number;
}

/**
 * The rows of one results table (see the module doc).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TableRows } from "./store.ts";
 * const dir = await Deno.makeTempDir();
 * const render = (rows: { seed: number; v: number }[]) => rows.map((r) => `${r.seed}: ${r.v}`).join("\n");
 * const t = await TableRows.open({ table: "demo", outputDir: `${dir}/runs`, out: `${dir}/t.md`, render });
 * await t.put({ seed: 0, v: 1 }, (r) => r.seed === 0);
 * await t.put({ seed: 0, v: 2 }, (r) => r.seed === 0); // replaces the seed-0 row
 * assert.deepEqual(await t.rows(), [{ seed: 0, v: 2 }]);
 * assert.equal(await Deno.readTextFile(`${dir}/t.md`), "0: 2");
 * // A fresh clone has the JSON but no runs: its rows come back.
 * await Deno.remove(`${dir}/runs`, { recursive: true });
 * const again = await TableRows.open({ table: "demo", outputDir: `${dir}/runs`, out: `${dir}/t.md`, render });
 * assert.deepEqual(await again.rows(), [{ seed: 0, v: 2 }]);
 * ```
 */
export class TableRows<R> {
  /** `<output-dir>/results.jsonl`. */
  readonly path: string;
  /** The JSON beside the markdown. */
  readonly json: string;
  readonly #o: TableRowsOptions<R>;

  private constructor(o: TableRowsOptions<R>) {
    this.#o = o;
    this.path = `${o.outputDir}/results.jsonl`;
    this.json = o.out.replace(/\.md$/, "") + ".json";
  }

  /** Create the output directory and, when `results.jsonl` is missing, seed it from the JSON. */
  static async open<R>(o: TableRowsOptions<R>): Promise<TableRows<R>> {
    const t = new TableRows(o);
    await Deno.mkdir(o.outputDir, { recursive: true });
    if (!(await exists(t.path)) && await exists(t.json)) {
      const saved = JSON.parse(await Deno.readTextFile(t.json)) as { rows?: R[] };
      const rows = saved.rows ?? [];
      if (rows.length) {
        await t.#save(rows);
        console.log(`rows: ${rows.length} from ${t.json}`);
      }
    }
    return t;
  }

  /** The rows so far. */
  rows(): Promise<R[]> {
    return readJsonl<R>(this.path);
  }

  /** Rewrite the markdown and the JSON from `rows`. */
  async write(rows: R[]): Promise<void> {
    const dir = this.#o.out.includes("/")
      ? this.#o.out.slice(0, this.#o.out.lastIndexOf("/"))
      : ".";
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(this.#o.out, this.#o.render(rows));
    const body = JSON.stringify({ table: this.#o.table, rows }, null, this.#o.indent ?? 1);
    await Deno.writeTextFile(this.json, body + "\n");
    console.log(`table: ${this.#o.out}, ${this.json} (${rows.length} rows)`);
  }

  /** Rewrite the markdown and the JSON from the saved rows (a table's `--render-only`). */
  async rewrite(): Promise<R[]> {
    const rows = await this.rows();
    await this.write(rows);
    return rows;
  }

  /** Add `row` in place of any row `same` matches; save the rows and rewrite the files. */
  async put(row: R, same: (r: R) => boolean): Promise<R[]> {
    const rows = (await this.rows()).filter((r) => !same(r));
    rows.push(row);
    await this.#save(rows);
    await this.write(rows);
    return rows;
  }

  async #save(rows: R[]): Promise<void> {
    await Deno.writeTextFile(this.path, rows.map((x) => JSON.stringify(x)).join("\n") + "\n");
  }
}

/**
 * Whether the run in `dir` is resumed: an interrupted run of an earlier invocation (it has a
 * last checkpoint) continues where it left off; anything else there is removed so the run
 * starts clean.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { resumableRun } from "./store.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/metrics.jsonl`, "");
 * assert.equal(await resumableRun(dir), false);
 * assert.equal(await Deno.stat(dir).then(() => true, () => false), false); // cleared
 * ```
 */
export async function resumableRun(dir: string): Promise<boolean> {
  if (await exists(`${dir}/checkpoints/last.safetensors`)) return true;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  return false;
}
