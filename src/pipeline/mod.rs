//! The revision pipeline: source revision -> config -> translate -> snapshot store.
//!
//! Every revision attempt is recorded in a [`Status`] that the admin API reads.

mod status;

pub use status::{
    Attempt, HISTORY, Outcome, RevisionMeta, SourceError, StageTimings, Status, epoch_seconds,
};
