/**
 * @file The REPA flags shared by `train:stablevm` and `train:cfm` (SV's spellings), and
 * their resolution into `RepaSettings`.
 * @module
 */
import { PROJ_WEIGHT_SCHEDULES, type RepaSettings } from "../mod.ts";
import type { FlagSpec } from "./flags.ts";

/**
 * The flags: `--use-proj-loss`, `--proj-encoder`, `--encoder-depth`, `--projector-dim`,
 * `--proj-weight-schedule`, `--proj-tau`, `--proj-k`, `--proj-coeff`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { REPA_FLAGS } from "./repa.ts";
 * assert.ok(REPA_FLAGS.some((f) => f.name === "proj-weight-schedule"));
 * ```
 */
export const REPA_FLAGS = [
  {
    name: "use-proj-loss",
    type: "bool",
    help: "REPA: align the DiT's tokens at --encoder-depth to --proj-encoder features",
  },
  {
    name: "proj-encoder",
    type: "string",
    help: "REPA encoder: a train:classifier run directory or .safetensors",
  },
  {
    name: "encoder-depth",
    type: "int",
    min: 1,
    help: "REPA: DiT blocks before the projector (default half the depth)",
  },
  { name: "projector-dim", type: "int", default: 256, min: 1, help: "REPA projector width" },
  {
    name: "proj-weight-schedule",
    type: "choice",
    choices: PROJ_WEIGHT_SCHEDULES,
    default: "hard",
    help: "VA-REPA schedule",
  },
  { name: "proj-tau", type: "number", default: 0.7, help: "VA-REPA split point in (0, 1)" },
  { name: "proj-k", type: "number", default: 20, help: "VA-REPA sigmoid sharpness" },
  { name: "proj-coeff", type: "number", default: 0.5, min: 0, help: "projection-loss coefficient" },
] as const satisfies readonly FlagSpec[];

/** The parsed REPA flags (camelCase), as `parseFlags` returns them. */
export interface RepaFlags {
  /** `--use-proj-loss`. */
  useProjLoss: boolean;
  /** `--proj-encoder`. */
  projEncoder?: string;
  /** `--encoder-depth` (default half the DiT's depth). */
  encoderDepth?: number;
  /** `--projector-dim`. */
  projectorDim: number;
  /** `--proj-weight-schedule`. */
  projWeightSchedule: RepaSettings["projWeightSchedule"];
  /** `--proj-tau`. */
  projTau: number;
  /** `--proj-k`. */
  projK: number;
  /** `--proj-coeff`. */
  projCoeff: number;
}

/**
 * Validate the REPA flags and resolve them for a DiT of `depth` blocks (`--encoder-depth`
 * defaults to half of it). REPA flags given without `--use-proj-loss` are refused, since they
 * would do nothing; `given` holds the flags present on the command line.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { resolveRepaFlags } from "./repa.ts";
 * const f = { useProjLoss: true, projEncoder: "c.safetensors", projectorDim: 64,
 *   projWeightSchedule: "sigmoid" as const, projTau: 0.7, projK: 20, projCoeff: 0.5 };
 * assert.equal(resolveRepaFlags(f, 4, new Set()).encoderDepth, 2);
 * assert.throws(() => resolveRepaFlags({ ...f, useProjLoss: false }, 4, new Set(["projTau"])),
 *   /--proj-tau has no effect without --use-proj-loss/);
 * ```
 */
export function resolveRepaFlags(
  f: RepaFlags,
  depth: number,
  given: ReadonlySet<string>,
): RepaSettings {
  if (!(f.projTau > 0 && f.projTau < 1)) {
    throw new RangeError(`Expected --proj-tau to be a number in (0, 1) but found ${f.projTau}`);
  }
  if (!f.useProjLoss) {
    const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    const names = ["projEncoder", "encoderDepth", "projectorDim", "projWeightSchedule"];
    for (const k of [...names, "projTau", "projK", "projCoeff"]) {
      if (given.has(k)) {
        throw new RangeError(
          `--${kebab(k)} has no effect without --use-proj-loss; add it or drop this flag`,
        );
      }
    }
  }
  return {
    useProjLoss: f.useProjLoss,
    projEncoder: f.projEncoder ?? null,
    encoderDepth: f.encoderDepth ?? Math.max(1, depth >> 1),
    projectorDim: f.projectorDim,
    projWeightSchedule: f.projWeightSchedule,
    projTau: f.projTau,
    projK: f.projK,
    projCoeff: f.projCoeff,
  };
}
