/**
 * @file parseFlags: every accepted spelling (kebab, snake, dotted, `=`/space, `--no-`,
 * Python booleans, aliases), defaults and typed camelCase output, and every error.
 * @module
 */
import { strict as assert } from "node:assert";
import { type FlagSpec, formatUsage, parseFlags } from "../../cli/mod.ts";

const SPEC = [
  { name: "num-steps", type: "int", default: 100, min: 1, help: "ODE steps" },
  { name: "cfg-scale", type: "number", default: 1.0, min: 0, help: "CFG scale" },
  { name: "loss-type", type: "choice", choices: ["si", "stablevm"], default: "si" },
  { name: "bank-capacity-per-class", type: "int", default: 256, min: 1, max: 4096 },
  { name: "anchor-weight", type: "number", default: 1.0 },
  { name: "use-label-anchors", type: "bool", default: true },
  { name: "prefill-bank-fully", type: "bool" },
  { name: "exp-name", type: "string" },
  { name: "model", type: "string", default: "SiT-XL/2" },
  { name: "output-dir", type: "string", default: "runs", aliases: ["save-dir"] },
] as const satisfies readonly FlagSpec[];

const parse = (argv: string[]) => parseFlags(argv, SPEC, { task: "train:stablevm" });

Deno.test("parseFlags returns defaults with camelCase keys and typed values", () => {
  const f = parse([]);
  assert.deepEqual(f, {
    _: [],
    numSteps: 100,
    cfgScale: 1,
    lossType: "si",
    bankCapacityPerClass: 256,
    anchorWeight: 1,
    useLabelAnchors: true,
    prefillBankFully: false,
    expName: undefined,
    model: "SiT-XL/2",
    outputDir: "runs",
  });
  // Compile-time types: numbers, literal unions, booleans.
  const n: number = f.numSteps;
  const l: "si" | "stablevm" = f.lossType;
  const b: boolean = f.prefillBankFully;
  const s: string | undefined = f.expName;
  assert.ok(n && l && !b && s === undefined);
});

Deno.test("parseFlags accepts kebab, snake_case, dotted model flags, = and space forms", () => {
  const f = parse([
    "--num-steps=250",
    "--cfg_scale",
    "1.8",
    "--loss_type=stablevm",
    "--bank-capacity-per-class",
    "64",
    "--model.anchor_weight=0.5",
    "--exp-name=linear-stablevm-bank=256-repa",
    "--model=SiT-B/2",
    "--save_dir",
    "./checkpoints/anchor",
  ]);
  assert.equal(f.numSteps, 250);
  assert.equal(f.cfgScale, 1.8);
  assert.equal(f.lossType, "stablevm");
  assert.equal(f.bankCapacityPerClass, 64);
  assert.equal(f.anchorWeight, 0.5);
  assert.equal(f.expName, "linear-stablevm-bank=256-repa");
  assert.equal(f.model, "SiT-B/2");
  assert.equal(f.outputDir, "./checkpoints/anchor");
  // Negative numbers after a space, and the last occurrence wins.
  const g = parse(["--anchor-weight", "-0.25", "--num-steps=3", "--num_steps=4"]);
  assert.equal(g.anchorWeight, -0.25);
  assert.equal(g.numSteps, 4);
});

Deno.test("parseFlags booleans: bare, --no-, =True/False (Python style), =1/0, and a following True", () => {
  assert.equal(parse(["--prefill-bank-fully"]).prefillBankFully, true);
  assert.equal(parse(["--no-use-label-anchors"]).useLabelAnchors, false);
  assert.equal(parse(["--model.use_label_anchors=False"]).useLabelAnchors, false);
  assert.equal(parse(["--model.use_label_anchors=True"]).useLabelAnchors, true);
  assert.equal(parse(["--prefill_bank_fully=1"]).prefillBankFully, true);
  assert.equal(parse(["--use-label-anchors=0"]).useLabelAnchors, false);
  assert.equal(parse(["--prefill-bank-fully", "True"]).prefillBankFully, true);
  assert.equal(parse(["--no-prefill-bank-fully"]).prefillBankFully, false);
});

Deno.test("parseFlags rejects unknown flags and lists the close matches", () => {
  assert.throws(() => parse(["--num-step=3"]), (e: unknown) => {
    assert.ok(e instanceof RangeError);
    assert.match(
      e.message,
      /Unknown flag --num-step for train:stablevm; did you mean --num-steps\?/,
    );
    return true;
  });
  assert.throws(() => parse(["--bank-capacity=3"]), /did you mean --bank-capacity-per-class/);
  assert.throws(() => parse(["--zzz"]), /Unknown flag --zzz for train:stablevm \(see --help\)/);
  assert.throws(() => parse(["-x"]), /Unknown flag -x/);
  assert.throws(() => parse(["stray"]), /Unexpected argument "stray"/);
});

Deno.test("parseFlags rejects malformed numbers, out-of-range values and bad choices, naming the flag", () => {
  assert.throws(
    () => parse(["--num-steps=abc"]),
    /Expected --num-steps to be an integer >= 1 but found "abc"/,
  );
  assert.throws(() => parse(["--num-steps=2.5"]), /--num-steps to be an integer/);
  assert.throws(
    () => parse(["--num-steps=0"]),
    /Expected --num-steps to be an integer >= 1 but found 0/,
  );
  assert.throws(
    () => parse(["--bank-capacity-per-class=5000"]),
    /--bank-capacity-per-class to be an integer in \[1, 4096\] but found 5000/,
  );
  assert.throws(() => parse(["--cfg-scale=-1"]), /--cfg-scale to be a number >= 0 but found -1/);
  assert.throws(() => parse(["--cfg-scale="]), /--cfg-scale to be a number >= 0 but found ""/);
  assert.throws(
    () => parse(["--loss-type=fm"]),
    /Expected --loss-type to be one of "si", "stablevm" but found "fm"/,
  );
  assert.throws(
    () => parse(["--prefill-bank-fully=maybe"]),
    /--prefill-bank-fully to be true\/false/,
  );
  assert.throws(() => parse(["--num-steps"]), /Expected a value after --num-steps/);
  assert.throws(
    () => parse(["--num-steps", "--cfg-scale=1"]),
    /Expected a value after --num-steps/,
  );
  assert.throws(() => parse(["--no-num-steps"]), /not a boolean/);
  assert.throws(() => parse(["--no-prefill-bank-fully=True"]), /without a value/);
});

Deno.test("parseFlags --help prints usage built from the spec", () => {
  let text = "";
  parseFlags(["--help"], SPEC, {
    task: "train:stablevm",
    usage: "Train StableVM.",
    onHelp: (t) => {
      text = t;
    },
  });
  assert.match(text, /^Usage: deno task train:stablevm \[flags\]/);
  assert.match(text, /Train StableVM\./);
  assert.match(text, /--num-steps <int>\s+ODE steps \(default: 100; >= 1\)/);
  assert.match(text, /--loss-type <si\|stablevm>/);
  assert.match(text, /--output-dir <string>.*alias: --save-dir/);
  assert.equal(text, formatUsage(SPEC, { task: "train:stablevm", usage: "Train StableVM." }));
});

Deno.test("parseFlags validates the spec itself", () => {
  assert.throws(() => parseFlags([], [{ name: "Bad_Name", type: "int" }]), /kebab-case/);
  assert.throws(() => parseFlags([], [{ name: "a", type: "choice" }]), /list its choices/);
  assert.throws(
    () => parseFlags([], [{ name: "a", type: "int" }, { name: "b", type: "int", aliases: ["a"] }]),
    /defined twice/,
  );
  assert.throws(
    () => parseFlags([], [{ name: "a", type: "choice", choices: ["x"], default: "y" }]),
    /Default "y" of flag --a/,
  );
  const p = parseFlags(["x", "y"], [{ name: "a", type: "int" }], { positionals: true });
  assert.deepEqual(p._, ["x", "y"]);
  assert.equal(p.a, undefined);
});

Deno.test("parseFlags reports which flags were given (defaults excluded), whatever the spelling", () => {
  const given = new Set<string>();
  parseFlags(
    ["--num_steps=3", "--no-ema", "--model.cfg_scale", "2"],
    [
      ...SPEC,
      { name: "ema", type: "bool", default: true },
    ] as const,
    { given },
  );
  assert.deepEqual([...given].sort(), ["cfgScale", "ema", "numSteps"]);
});
