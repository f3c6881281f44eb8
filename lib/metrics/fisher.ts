/**
 * @file (being written).
 * @module
 */
export {};
