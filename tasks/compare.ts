/**
 * @file `deno task compare <run-dir> <run-dir>…` — overlay several runs in one
 * self-contained HTML report (metric curves with one line per run, configuration with the
 * differing keys marked, samples side by side). `--out` names the file (default
 * `compare.html` beside the first run). Exit status 2 when an argument is not a run.
 * @module
 */
import { main } from "./report.ts";

if (import.meta.main) Deno.exit(await main(Deno.args, true));
