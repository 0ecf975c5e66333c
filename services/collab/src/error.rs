//! What can be wrong with an edit or an operation: each refused before it changes anything.

use crate::causal::{Dot, ReplicaId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("position {pos} is past the end of the document ({len} characters)")]
    PositionOutOfRange { pos: usize, len: usize },
    #[error("deleting {count} characters from position {pos} goes past the end ({len} characters)")]
    RangeOutOfRange {
        pos: usize,
        count: usize,
        len: usize,
    },
    #[error("an insertion of {len} characters is more than the limit of {limit}")]
    TooLarge { len: u64, limit: u64 },
}

/// Why a remote operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("operation {id} is empty")]
    Empty { id: Dot },
    #[error("operation {id} carries {len} characters, more than the limit of {limit}")]
    TooLarge { id: Dot, len: u64, limit: u64 },
    #[error("operation {id} names {missing} ({what}), which its own history does not hold")]
    CausallyImpossible {
        id: Dot,
        missing: Dot,
        what: &'static str,
    },
    #[error("operation {id} names a left origin {left} that comes after its right origin {right}")]
    OriginsOutOfOrder { id: Dot, left: Dot, right: Dot },
    #[error("operation {id} lists itself or a later dot of {replica} as a parent")]
    ParentNotBefore { id: Dot, replica: ReplicaId },
    #[error("{count} operations wait for missing history (limit {limit}); operation {id} refused")]
    TooManyPending { id: Dot, count: usize, limit: usize },
}

/// Why a past version cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version {version} holds operations this document has not seen (it has {held})")]
    NotHeld { version: String, held: String },
    #[error(
        "version {version} is not one this document passed through: {id} needs history outside it"
    )]
    NotCausallyClosed { version: String, id: Dot },
}
