//! attache: a GitOps control plane for Envoy.
//!
//! Configuration flows one way through the stages below (see DESIGN.md):
//!
//! ```text
//! config (parse + validate) -> translate (pure) -> snapshot (versioned) -> xds (ADS server)
//!                                  ^
//!                   endpoints -----'
//! ```
//!
//! Start reading at [`config::load_dir`], then [`translate::translate`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod diff;
pub mod endpoints;
pub mod metrics;
mod parallel;
pub mod pipeline;
pub mod render;
pub mod serve;
pub mod snapshot;
pub mod source;
pub mod translate;
pub mod xds;
