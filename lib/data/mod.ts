/**
 * @file lib/data: 2-D toy distributions, the Fashion-MNIST IDX reader, image folders,
 * labelled NumPy array datasets and deterministic minibatch streams.
 * @module
 */
export {
  checkerboard,
  eightGaussians,
  moons,
  sampleToy,
  spirals,
  TOY_NAMES,
  type ToyName,
  type ToyOptions,
} from "./toys.ts";
export {
  decodeIdx,
  FASHION_MNIST_CLASSES,
  type FashionMnist,
  type FashionMnistOptions,
  type IdxArray,
  type IdxOptions,
  type ImageDataset,
  loadFashionMnist,
} from "./fashion_mnist.ts";
export {
  type ArrayDataset,
  type ArrayDatasetOptions,
  loadArrayDataset,
  validateArrayDataset,
} from "./arrays.ts";
export { Batcher, gatherRows, shuffledBatches } from "./batcher.ts";
export { type ImageFolderOptions, loadImageFolder } from "./image_folder.ts";
