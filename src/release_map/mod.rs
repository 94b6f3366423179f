//! The release map: which scripts exist, which release introduced each, and how each runs.
//! `schema` is the file format, `load` parses and validates it, `model` is the checked view.

pub mod load;
mod load_stand_ins;
mod load_tools;
pub mod model;
pub mod order;
pub mod schema;
pub mod tools;

pub use load::{load, parse_map, EMBEDDED_MAP, EMBEDDED_NAME};
pub use load_stand_ins::DEFAULT_LOCKFILE;
pub use model::*;
pub use tools::{Down, ToolJournal};
