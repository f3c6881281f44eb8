/**
 * @file lib/flow (being written).
 * @module
 */
export {};
