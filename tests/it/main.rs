//! Integration tests: real HTTP between a client, the router and simulated upstreams, all on
//! 127.0.0.1, started and stopped by each test. No test touches the network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cascade;
mod chaos;
mod classifier;
mod eval;
mod gateway;
mod harness;
mod hostile;
mod process;
mod routing;
mod sdk;
mod streaming;
