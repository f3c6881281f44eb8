/**
 * @file lib/data (being written).
 * @module
 */
export {};
