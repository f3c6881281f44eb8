/**
 * flowgpu/cli: command-line plumbing shared by the `deno task` entry points — typed flag
 * parsing with the seeds' spellings as aliases, and usage text.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./mod.ts";
 * import { strict as assert } from "node:assert";
 * const f = parseFlags(["--num-steps", "8"], [{ name: "num-steps", type: "int", default: 1 }]);
 * assert.equal(f!.numSteps, 8);
 * ```
 * @module
 */
export {
  type CamelCase,
  type FlagSpec,
  type FlagValue,
  formatUsage,
  type ParsedFlags,
  parseFlags,
  type ParseFlagsOptions,
  parseTaskFlags,
} from "./flags.ts";
export {
  commandWithPermission,
  exitCodeOf,
  runTask,
  type RunTaskOptions,
  taskSignal,
  TaskStop,
} from "./task.ts";
export { REPA_FLAGS, type RepaFlags, resolveRepaFlags } from "./repa.ts";
export { resumableRun, TableRows, type TableRowsOptions } from "./tables/store.ts";
export {
  fmtMeanStd,
  gitCommit,
  type MeanStd,
  meanStd,
  parseList,
  parseSeeds,
  parseWidths,
  readJsonl,
  replaceBlock,
  separated,
} from "./results.ts";
