//! The release map: which scripts exist, which release introduced each, and how each runs.

pub mod schema;
