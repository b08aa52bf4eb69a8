//! snapshot (to be written).
