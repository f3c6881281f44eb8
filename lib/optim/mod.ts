/**
 * @file lib/optim (being written).
 * @module
 */
export {};
