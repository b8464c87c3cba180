//! The observations every nrtsim run records and the checker reads, and their file formats.
//!
//! The history is the only thing the checker sees: it never links the pipeline, so it cannot
//! share the pipeline's bugs. Observations are batched the way the pipeline moves data (one
//! observation per produce batch, per fetch, per lake commit), which keeps a run of millions of
//! changes to a few hundred thousand observations.

pub mod file;
pub mod observation;

pub use file::{
    parse_jsonl, read_history, write_history, HistoryError, HistoryFormat, HistoryReader,
    HistoryWriter,
};
pub use observation::{
    FaultPhase, LakeFiles, LakeRow, Observation, Payment, RouteReason, RunHeader, SourceChange,
    Stage, TopicName,
};
