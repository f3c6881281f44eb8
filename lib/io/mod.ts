/**
 * @file lib/io (being written).
 * @module
 */
export {};
