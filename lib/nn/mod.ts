/**
 * @file lib/nn (being written).
 * @module
 */
export {};
