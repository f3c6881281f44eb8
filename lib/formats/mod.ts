/**
 * @file lib/formats: file formats that need no Tensor (NumPy .npy/.npz, PNG) and atomic
 * writes. The bottom layer beside lib/_util.ts: nothing here touches the file system,
 * environment or network at import time.
 * @module
 */
export {
  type DecodeOptions,
  DEFAULT_FETCH_TIMEOUT_MS,
  DEFAULT_MAX_BYTES,
  FetchError,
  FileFormatError,
  FileTypeError,
  type LoadOptions,
} from "./_bytes.ts";
export { atomicWrite, ensureDir } from "./fs.ts";
export {
  decodeNpy,
  decodeNpz,
  encodeNpy,
  encodeNpz,
  loadNpy,
  loadNpz,
  type NpyArray,
  type NpyInput,
  type NpyWriteDtype,
  saveNpy,
  saveNpz,
} from "./npy.ts";
export { decodePng, encodePng, type RawImage, type RgbaImage, toRgba, toUint8Nhwc } from "./png.ts";
