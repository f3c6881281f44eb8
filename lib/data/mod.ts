/**
 * @file lib/data: 2-D toy distributions, the Fashion-MNIST IDX reader, image folders and
 * deterministic minibatch streams.
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
  FASHION_MNIST_CLASSES,
  type FashionMnist,
  type FashionMnistOptions,
  type ImageDataset,
  loadFashionMnist,
} from "./fashion_mnist.ts";
export { Batcher, gatherRows, shuffledBatches } from "./batcher.ts";
export { type ImageFolderOptions, loadImageFolder } from "./image_folder.ts";
