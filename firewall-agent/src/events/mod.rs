//! From kernel events to the violation log (DESIGN §6): the ring buffer reader, the fold
//! accounting that keeps counts exact, and the JSON line format.
pub mod accounting;
pub mod format;
pub mod names;

pub use accounting::Accounting;
pub use format::{LogLine, Peer};
pub use names::{NameTables, Names};
