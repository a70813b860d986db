//! Every kernel against its CPU reference, on the process-wide GPU (one device per test
//! binary, so each pipeline compiles once).

#[path = "../common/mod.rs"]
mod common;

mod elementwise;
