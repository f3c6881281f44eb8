/**
 * @file lib/io: tensor files (safetensors, checkpoints), run directories and progress.
 * Formats that need no Tensor live in lib/formats; figures in the `./viz` export; CLI flag
 * parsing in the `./cli` export. Nothing here touches the file system, environment or
 * network at import time.
 * @module
 */
export * from "../formats/mod.ts";
export {
  bf16ToF32,
  type DecodedArray,
  decodeSafetensors,
  decodeSafetensorsWithMetadata,
  encodeSafetensors,
  f16ToF32,
  type HostArray,
  loadSafetensors,
  loadSafetensorsFromBytes,
  saveSafetensors,
} from "./safetensors.ts";
export {
  type Checkpoint,
  CheckpointError,
  CheckpointManager,
  type CheckpointManagerOptions,
  decodeCheckpoint,
  encodeCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
export {
  camelKeys,
  configFileText,
  createRun,
  type CreateRunOptions,
  openRun,
  parseConfigFile,
  readMetrics,
  Run,
  snakeKeys,
} from "./run.ts";
export {
  type Phase,
  type PhaseOptions,
  Progress,
  type ProgressOptions,
  startPhase,
  withPhase,
} from "./progress.ts";
export {
  CLUSTER_DIR_FILES,
  type ClusterDir,
  loadClusterDir,
  type LoadClusterDirOptions,
} from "./cluster_dir.ts";
