//! Tests of the parsing layer: every corpus mail, robustness, helpers.

mod classify;
mod corpus;
mod corpus_more;
mod robust;
mod threading;
mod units;
