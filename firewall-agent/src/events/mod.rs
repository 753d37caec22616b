//! From kernel events to the violation log (docs/design.md#violation-log): the ring-buffer and
//! fold-map reader, the fold accounting that keeps counts exact, the names the ids resolve to,
//! and the JSON line format.
pub mod accounting;
pub mod format;
pub mod names;
pub mod reader;

pub use accounting::Accounting;
pub use format::{LogLine, Peer};
pub use names::{NameTables, Names};
pub use reader::{ViolationLog, counter};
