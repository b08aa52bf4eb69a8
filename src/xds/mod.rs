//! xds (being written).
