//! xds (to be written).
