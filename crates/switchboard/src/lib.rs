//! The Switchboard daemon: configuration in, wired crates out.
//!
//! [`cli`] parses the command line; [`config`] loads and checks the
//! configuration; [`app`] builds the store, the router and the channels from
//! it and runs them with the HTTP server until a signal says stop.
#![forbid(unsafe_code)]

pub mod app;
pub mod channels;
pub mod cli;
pub mod config;
mod deadline;
pub mod http;
mod limits;
mod serve;
pub mod systemd;
pub mod telemetry;

/// The daemon allocates and frees many small buffers per request (HTTP,
/// JSON, Redis replies); glibc's malloc spent ~15% of the intake benchmark's
/// CPU in the daemon. mimalloc is defined here, in the library, so the
/// `switchboard` binary and the test build of it use the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
