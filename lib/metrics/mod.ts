/**
 * @file lib/metrics (being written).
 * @module
 */
export {};
