/**
 * @file The op vocabulary, and the registration of Tensor methods.
 * @module
 */
import { registerTensorOps } from "../tensor.ts";
import * as o from "./ops.ts";

registerTensorOps({
  add: o.add,
  sub: o.sub,
  mul: o.mul,
  div: o.div,
  pow: o.pow,
  maximum: o.maximum,
  minimum: o.minimum,
  neg: o.neg,
  exp: o.exp,
  log: o.log,
  sqrt: o.sqrt,
  square: o.square,
  abs: o.abs,
  tanh: o.tanh,
  sigmoid: o.sigmoid,
  relu: o.relu,
  sum: o.sum,
  mean: o.mean,
  max: o.max,
  min: o.min,
  matmul: (a, b) => o.matmul(a, b),
  reshape: o.reshape,
  transpose: o.transpose,
  stopGradient: o.stopGradient,
});

export * from "./ops.ts";
export { fused, fusedGroups, Fx, fx } from "./fused.ts";
export { logSumExpAdd, type LogSumExpAddOptions } from "./lse.ts";
export { linear, type LinearActivation, type LinearOptions } from "./linear.ts";
