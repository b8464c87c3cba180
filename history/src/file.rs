//! History files: how a run's observations are stored and read back in one pass.
//!
//! Two formats, told apart by their first bytes when read:
//!
//! - **Binary** (for real runs): a zstd stream (with a checksum) of the magic `NRTSIMH5`, then
//!   one frame per observation (a little-endian `u32` length and the observation's postcard
//!   encoding), then a zero length that marks the end, so a cut-short file is an error and not
//!   a shorter history.
//! - **JSON lines** (for small runs and hand-written test histories): one observation per
//!   line, tagged by `type`; blank lines are ignored. One line per kind:
//!
//!   In the header, `scenario_toml` holds the scenario file's text; hand-written histories may
//!   omit it.
//!
//! ```text
//! {"type":"header","scenario":"card-clean","seed":1,"replay":"nrtsim run scenarios/card-clean.toml --seed 1","nrtsim_version":"0.1.0","scenario_toml":""}
//! {"type":"source_commit","t_ms":5,"txid":1,"changes":[{"lsn":1,"key":{"table":"accounts","id":7},"op":"u","digest":11,"poison":false,"payment":null,"balance_cents":1250}]}
//! {"type":"produced","t_ms":6,"stage":"cdc","host":"cdc","topic":"raw","partition":0,"base_offset":0,"change_ids":[1]}
//! {"type":"read","t_ms":7,"stage":"standardize","host":"standardize-0","topic":"raw","partition":0,"base_offset":0,"change_ids":[1]}
//! {"type":"routed","t_ms":8,"change_id":1,"to":"redo","reason":"reference_miss","attempt":1}
//! {"type":"lake_commit","t_ms":9,"host":"lake-0","checkpoint_id":1,"snapshot_id":1,"rows":[{"change_id":1,"key":{"table":"accounts","id":7},"digest":11,"folded":false,"balance_cents":1250}],"files":{"files_written":1,"live_files":1,"small_files":1,"small_files_written":1}}
//! {"type":"checkpoint","t_ms":9,"host":"lake-0","checkpoint_id":1}
//! {"type":"fault","t_ms":3,"kind":"broker-crash","target":"broker-1","phase":"start"}
//! {"type":"workload_end","t_ms":10}
//! {"type":"run_end","t_ms":12,"drained":true}
//! {"type":"fraud_alert","t_ms":11,"change_id":2,"score":60,"reasons":"velocity"}
//! {"type":"aggregate","t_ms":11,"account_id":7,"window_start_ms":0,"window_ms":60000,"spend_cents":1250,"payments":1}
//! {"type":"watermark","t_ms":11,"watermark_ms":60000,"window_ms":60000,"late_dropped":0}
//! {"type":"txn_end","t_ms":6,"txid":1,"event_count":1}
//! {"type":"produced","t_ms":13,"stage":"enrich","host":"enrich-0","topic":"enriched","partition":0,"base_offset":4,"change_ids":[1],"txn":3,"leader_epoch":2}
//! {"type":"abort_marker","t_ms":15,"topic":"enriched","partition":0,"offsets":[4],"change_ids":[1]}
//! {"type":"kafka_txn","t_ms":14,"txn":3,"producer":"enrich-0","committed":false,"timed_out":true}
//! {"type":"schema_decision","t_ms":16,"host":"standardize-0","subject":"standard-bank.accounts","table_version":2,"id":3,"reason":""}
//! {"type":"snapshot_chunk","t_ms":2,"host":"cdc","table":"accounts","from_id":0,"to_id":null,"low_lsn":0,"high_lsn":1,"rows":[1]}
//! {"type":"offset_reset","t_ms":17,"stage":"lake","host":"lake-0","topic":"enriched","partition":2,"from":120,"to":480,"log_start":300}
//! {"type":"retention_deleted","t_ms":16,"host":"broker-1","topic":"enriched","partition":2,"log_start":300}
//! {"type":"truncation_detected","t_ms":18,"stage":"standardize","host":"standardize-0","topic":"raw","partition":3,"from":5200,"to":4870}
//! {"type":"leader_change","t_ms":19,"host":"broker-2","topic":"raw","partition":3,"epoch":2,"log_end":4870}
//! {"type":"lake_rolled_back","t_ms":20,"host":"lake-0","checkpoint_id":4,"pre_committed_ms":9,"change_ids":[1]}
//! {"type":"appended_unacknowledged","t_ms":21,"host":"broker-0","topic":"critical","partition":1,"base_offset":7,"change_ids":[1]}
//! ```
//!
//! A history is written to a temporary file beside its final path and renamed into place by
//! [`HistoryWriter::finish`], so it exists whole or not at all.
//!
//! postcard cannot read the `type`-tagged enum JSON lines need, so binary frames go through
//! [`Frame`], a mirror of [`Observation`] that postcard can read, with the same variants and
//! fields in the same order.

use crate::observation::{
    FaultPhase, LakeFiles, LakeRow, Observation, RouteReason, RunHeader, SourceChange, Stage,
    TopicName,
};
use nrtsim_workloads::Table;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a decompressed binary history.
pub const MAGIC: &[u8; 8] = b"NRTSIMH5";
/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd level: fast, and histories compress well at it.
const ZSTD_LEVEL: i32 = 3;
/// No single observation is this large; a length beyond it means the file is corrupt.
const MAX_FRAME_BYTES: u32 = 1 << 30;

/// Which form a history file takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryFormat {
    /// zstd-compressed postcard frames.
    Binary,
    /// One JSON observation per line.
    Jsonl,
}

/// Why a history could not be written or read. Each names the file (or `<text>`).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be created, written, renamed or opened.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A binary frame could not be read or decoded.
    #[error("{file}: observation {index}: {message}")]
    Decode {
        /// The file.
        file: String,
        /// The 0-based index of the observation that failed.
        index: u64,
        /// What was wrong.
        message: String,
    },
    /// A JSON line did not parse as an observation.
    #[error("{file}: line {line}: {source}")]
    Json {
        /// The file.
        file: String,
        /// The 1-based line number.
        line: u64,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// A binary history ended before its end marker.
    #[error("{file}: cut short after {index} observations")]
    Truncated {
        /// The file.
        file: String,
        /// How many observations were read whole.
        index: u64,
    },
    /// The file is neither a binary history nor JSON lines.
    #[error("{file}: not an nrtsim history (expected a zstd stream or JSON lines)")]
    UnknownFormat {
        /// The file.
        file: String,
    },
}

/// Writes one history file; nothing appears at the path until [`HistoryWriter::finish`].
pub struct HistoryWriter {
    path: PathBuf,
    temp: PathBuf,
    sink: Option<Sink>,
    written: u64,
    frame: Vec<u8>,
}

enum Sink {
    Binary(zstd::stream::write::Encoder<'static, BufWriter<File>>),
    Jsonl(BufWriter<File>),
}

impl HistoryWriter {
    /// Starts a history at `path` in `format`, writing through a temporary file beside it.
    pub fn create(path: impl AsRef<Path>, format: HistoryFormat) -> Result<Self, HistoryError> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_name()
            .map_or_else(|| "history".into(), |n| n.to_string_lossy().into_owned());
        let temp = path.with_file_name(format!(".{name}.partial"));
        let io_err = |source| HistoryError::Io {
            file: path.display().to_string(),
            source,
        };
        let file = BufWriter::new(File::create(&temp).map_err(io_err)?);
        let sink = match format {
            HistoryFormat::Jsonl => Sink::Jsonl(file),
            HistoryFormat::Binary => {
                let mut enc =
                    zstd::stream::write::Encoder::new(file, ZSTD_LEVEL).map_err(io_err)?;
                enc.include_checksum(true).map_err(io_err)?;
                enc.write_all(MAGIC).map_err(io_err)?;
                Sink::Binary(enc)
            }
        };
        Ok(Self {
            path,
            temp,
            sink: Some(sink),
            written: 0,
            frame: Vec::with_capacity(256),
        })
    }

    /// Appends one observation.
    pub fn write(&mut self, observation: &Observation) -> Result<(), HistoryError> {
        let result = match self.sink.as_mut().expect("not finished") {
            Sink::Jsonl(w) => serde_json::to_writer(&mut *w, observation)
                .map_err(io::Error::from)
                .and_then(|()| w.write_all(b"\n")),
            Sink::Binary(w) => {
                self.frame.clear();
                let frame = std::mem::take(&mut self.frame);
                match postcard::to_extend(&FrameRef::from(observation), frame) {
                    Ok(frame) => {
                        self.frame = frame;
                        let len = u32::try_from(self.frame.len()).unwrap_or(u32::MAX);
                        w.write_all(&len.to_le_bytes())
                            .and_then(|()| w.write_all(&self.frame))
                    }
                    Err(e) => Err(io::Error::other(e)),
                }
            }
        };
        result.map_err(|source| self.io_error(source))?;
        self.written += 1;
        Ok(())
    }

    /// How many observations have been written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the file and moves it into place.
    pub fn finish(mut self) -> Result<(), HistoryError> {
        let sink = self.sink.take().expect("not finished");
        let done = (|| {
            let file = match sink {
                Sink::Jsonl(w) => w,
                Sink::Binary(mut enc) => {
                    enc.write_all(&0u32.to_le_bytes())?;
                    enc.finish()?
                }
            };
            let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            std::fs::rename(&self.temp, &self.path)
        })();
        done.map_err(|source| {
            // The sink is gone, so `drop` will not clean up: a failed finish leaves nothing.
            let _ = std::fs::remove_file(&self.temp);
            self.io_error(source)
        })
    }

    fn io_error(&self, source: io::Error) -> HistoryError {
        HistoryError::Io {
            file: self.path.display().to_string(),
            source,
        }
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        // Unfinished: leave nothing behind.
        if self.sink.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `observations` to a new history at `path` in `format`.
pub fn write_history<'a>(
    path: impl AsRef<Path>,
    format: HistoryFormat,
    observations: impl IntoIterator<Item = &'a Observation>,
) -> Result<(), HistoryError> {
    let mut writer = HistoryWriter::create(path, format)?;
    for o in observations {
        writer.write(o)?;
    }
    writer.finish()
}

/// Reads a history in one pass; an iterator that stops after the first error.
pub struct HistoryReader {
    file: String,
    format: HistoryFormat,
    source: Source,
    index: u64,
    line: u64,
    done: bool,
    buf: Vec<u8>,
}

enum Source {
    Binary(Box<BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>>),
    Jsonl(BufReader<File>),
}

/// Opens the history at `path`, telling its format from its first bytes.
pub fn read_history(path: impl AsRef<Path>) -> Result<HistoryReader, HistoryError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let io_err = |source| HistoryError::Io {
        file: file.clone(),
        source,
    };
    let mut input = BufReader::new(File::open(path).map_err(io_err)?);
    let head = input.fill_buf().map_err(io_err)?;
    let binary = head.starts_with(&ZSTD_MAGIC);
    let text = head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| *b == b'{');
    let (format, source) = if binary {
        let decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(io_err)?;
        let mut decoded = BufReader::with_capacity(64 * 1024, decoder);
        let mut magic = [0u8; 8];
        if decoded.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return Err(HistoryError::UnknownFormat { file });
        }
        (HistoryFormat::Binary, Source::Binary(Box::new(decoded)))
    } else if text {
        (HistoryFormat::Jsonl, Source::Jsonl(input))
    } else {
        return Err(HistoryError::UnknownFormat { file });
    };
    Ok(HistoryReader {
        file,
        format,
        source,
        index: 0,
        line: 0,
        done: false,
        buf: Vec::new(),
    })
}

impl HistoryReader {
    /// The format the file turned out to be in.
    pub fn format(&self) -> HistoryFormat {
        self.format
    }

    /// How many observations have been read so far.
    pub fn observations_read(&self) -> u64 {
        self.index
    }

    fn next_binary(&mut self) -> Option<Result<Observation, HistoryError>> {
        let Source::Binary(input) = &mut self.source else {
            unreachable!()
        };
        let mut len = [0u8; 4];
        if let Err(e) = input.read_exact(&mut len) {
            return Some(Err(self.read_failure(e)));
        }
        let len = u32::from_le_bytes(len);
        if len == 0 {
            // The end marker. Read on to the end of the stream, so that zstd checks its
            // checksum and a damaged tail is not mistaken for a clean end.
            let mut rest = [0u8; 1];
            return match input.read(&mut rest) {
                Ok(0) => None,
                Ok(_) => Some(Err(self.decode_failure("data after the end marker".into()))),
                Err(e) => Some(Err(self.read_failure(e))),
            };
        }
        if len > MAX_FRAME_BYTES {
            return Some(Err(self.decode_failure(format!("frame of {len} bytes"))));
        }
        self.buf.resize(len as usize, 0);
        if let Err(e) = input.read_exact(&mut self.buf) {
            return Some(Err(self.read_failure(e)));
        }
        match postcard::from_bytes::<Frame>(&self.buf) {
            Ok(frame) => Some(Ok(frame.into())),
            Err(e) => Some(Err(self.decode_failure(e.to_string()))),
        }
    }

    fn next_jsonl(&mut self) -> Option<Result<Observation, HistoryError>> {
        let Source::Jsonl(input) = &mut self.source else {
            unreachable!()
        };
        loop {
            self.buf.clear();
            self.line += 1;
            match input.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(HistoryError::Io {
                        file: self.file.clone(),
                        source,
                    }))
                }
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(&self.buf).map_err(|source| HistoryError::Json {
                    file: self.file.clone(),
                    line: self.line,
                    source,
                }),
            );
        }
    }

    fn read_failure(&self, e: io::Error) -> HistoryError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            HistoryError::Truncated {
                file: self.file.clone(),
                index: self.index,
            }
        } else {
            self.decode_failure(e.to_string())
        }
    }

    fn decode_failure(&self, message: String) -> HistoryError {
        HistoryError::Decode {
            file: self.file.clone(),
            index: self.index,
            message,
        }
    }
}

impl Iterator for HistoryReader {
    type Item = Result<Observation, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match self.format {
            HistoryFormat::Binary => self.next_binary(),
            HistoryFormat::Jsonl => self.next_jsonl(),
        };
        match &next {
            Some(Ok(_)) => self.index += 1,
            _ => self.done = true,
        }
        next
    }
}

/// Parses a JSON-lines history held in memory (blank lines are skipped).
pub fn parse_jsonl(text: &str) -> Result<Vec<Observation>, HistoryError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| HistoryError::Json {
                file: "<text>".to_string(),
                line: i as u64 + 1,
                source,
            })
        })
        .collect()
}

/// [`Observation`] as binary frames hold it: externally tagged, which postcard can read.
/// The variants and their fields must stay in the same order as [`FrameRef`]'s.
#[derive(Deserialize)]
enum Frame {
    Header(RunHeader),
    SourceCommit {
        t_ms: u64,
        txid: u64,
        changes: Vec<SourceChange>,
    },
    Produced {
        t_ms: u64,
        stage: Stage,
        host: String,
        topic: TopicName,
        partition: u32,
        base_offset: u64,
        change_ids: Vec<u64>,
        txn: Option<u64>,
        leader_epoch: Option<u32>,
    },
    Read {
        t_ms: u64,
        stage: Stage,
        host: String,
        topic: TopicName,
        partition: u32,
        base_offset: u64,
        change_ids: Vec<u64>,
    },
    Routed {
        t_ms: u64,
        change_id: u64,
        to: TopicName,
        reason: RouteReason,
        attempt: u32,
    },
    LakeCommit {
        t_ms: u64,
        host: String,
        checkpoint_id: u64,
        snapshot_id: u64,
        rows: Vec<LakeRow>,
        files: LakeFiles,
    },
    Checkpoint {
        t_ms: u64,
        host: String,
        checkpoint_id: u64,
    },
    Fault {
        t_ms: u64,
        kind: String,
        target: String,
        phase: FaultPhase,
    },
    WorkloadEnd {
        t_ms: u64,
    },
    RunEnd {
        t_ms: u64,
        drained: bool,
    },
    FraudAlert {
        t_ms: u64,
        change_id: u64,
        score: u32,
        reasons: String,
    },
    Aggregate {
        t_ms: u64,
        account_id: u64,
        window_start_ms: u64,
        window_ms: u64,
        spend_cents: i64,
        payments: u32,
    },
    Watermark {
        t_ms: u64,
        watermark_ms: u64,
        window_ms: u64,
        late_dropped: u64,
    },
    TxnEnd {
        t_ms: u64,
        txid: u64,
        event_count: u64,
    },
    KafkaTxn {
        t_ms: u64,
        txn: u64,
        producer: String,
        committed: bool,
        timed_out: bool,
    },
    AbortMarker {
        t_ms: u64,
        topic: TopicName,
        partition: u32,
        offsets: Vec<u64>,
        change_ids: Vec<u64>,
    },
    SchemaDecision {
        t_ms: u64,
        host: String,
        subject: String,
        table_version: u32,
        id: Option<u32>,
        reason: String,
    },
    SnapshotChunk {
        t_ms: u64,
        host: String,
        table: Table,
        from_id: u64,
        to_id: Option<u64>,
        low_lsn: u64,
        high_lsn: u64,
        rows: Vec<u64>,
    },
    OffsetReset {
        t_ms: u64,
        stage: Stage,
        host: String,
        topic: TopicName,
        partition: u32,
        from: u64,
        to: u64,
        log_start: u64,
    },
    RetentionDeleted {
        t_ms: u64,
        host: String,
        topic: TopicName,
        partition: u32,
        log_start: u64,
    },
    TruncationDetected {
        t_ms: u64,
        stage: Stage,
        host: String,
        topic: TopicName,
        partition: u32,
        from: u64,
        to: u64,
    },
    LeaderChange {
        t_ms: u64,
        host: String,
        topic: TopicName,
        partition: u32,
        epoch: u32,
        log_end: u64,
    },
    // Added after the rest: a history written before them still reads.
    LakeRolledBack {
        t_ms: u64,
        host: String,
        checkpoint_id: u64,
        pre_committed_ms: u64,
        change_ids: Vec<u64>,
    },
    AppendedUnacknowledged {
        t_ms: u64,
        host: String,
        topic: TopicName,
        partition: u32,
        base_offset: u64,
        change_ids: Vec<u64>,
    },
}

/// The borrowed twin of [`Frame`], so writing needs no copy of the observation.
#[derive(Serialize)]
enum FrameRef<'a> {
    Header(&'a RunHeader),
    SourceCommit {
        t_ms: u64,
        txid: u64,
        changes: &'a [SourceChange],
    },
    Produced {
        t_ms: u64,
        stage: Stage,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        base_offset: u64,
        change_ids: &'a [u64],
        txn: Option<u64>,
        leader_epoch: Option<u32>,
    },
    Read {
        t_ms: u64,
        stage: Stage,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        base_offset: u64,
        change_ids: &'a [u64],
    },
    Routed {
        t_ms: u64,
        change_id: u64,
        to: TopicName,
        reason: RouteReason,
        attempt: u32,
    },
    LakeCommit {
        t_ms: u64,
        host: &'a str,
        checkpoint_id: u64,
        snapshot_id: u64,
        rows: &'a [LakeRow],
        files: LakeFiles,
    },
    Checkpoint {
        t_ms: u64,
        host: &'a str,
        checkpoint_id: u64,
    },
    Fault {
        t_ms: u64,
        kind: &'a str,
        target: &'a str,
        phase: FaultPhase,
    },
    WorkloadEnd {
        t_ms: u64,
    },
    RunEnd {
        t_ms: u64,
        drained: bool,
    },
    FraudAlert {
        t_ms: u64,
        change_id: u64,
        score: u32,
        reasons: &'a str,
    },
    Aggregate {
        t_ms: u64,
        account_id: u64,
        window_start_ms: u64,
        window_ms: u64,
        spend_cents: i64,
        payments: u32,
    },
    Watermark {
        t_ms: u64,
        watermark_ms: u64,
        window_ms: u64,
        late_dropped: u64,
    },
    TxnEnd {
        t_ms: u64,
        txid: u64,
        event_count: u64,
    },
    KafkaTxn {
        t_ms: u64,
        txn: u64,
        producer: &'a str,
        committed: bool,
        timed_out: bool,
    },
    AbortMarker {
        t_ms: u64,
        topic: TopicName,
        partition: u32,
        offsets: &'a [u64],
        change_ids: &'a [u64],
    },
    SchemaDecision {
        t_ms: u64,
        host: &'a str,
        subject: &'a str,
        table_version: u32,
        id: Option<u32>,
        reason: &'a str,
    },
    SnapshotChunk {
        t_ms: u64,
        host: &'a str,
        table: Table,
        from_id: u64,
        to_id: Option<u64>,
        low_lsn: u64,
        high_lsn: u64,
        rows: &'a [u64],
    },
    OffsetReset {
        t_ms: u64,
        stage: Stage,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        from: u64,
        to: u64,
        log_start: u64,
    },
    RetentionDeleted {
        t_ms: u64,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        log_start: u64,
    },
    TruncationDetected {
        t_ms: u64,
        stage: Stage,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        from: u64,
        to: u64,
    },
    LeaderChange {
        t_ms: u64,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        epoch: u32,
        log_end: u64,
    },
    LakeRolledBack {
        t_ms: u64,
        host: &'a str,
        checkpoint_id: u64,
        pre_committed_ms: u64,
        change_ids: &'a [u64],
    },
    AppendedUnacknowledged {
        t_ms: u64,
        host: &'a str,
        topic: TopicName,
        partition: u32,
        base_offset: u64,
        change_ids: &'a [u64],
    },
}

impl<'a> From<&'a Observation> for FrameRef<'a> {
    fn from(o: &'a Observation) -> Self {
        match o {
            Observation::Header(h) => FrameRef::Header(h),
            Observation::SourceCommit {
                t_ms,
                txid,
                changes,
            } => FrameRef::SourceCommit {
                t_ms: *t_ms,
                txid: *txid,
                changes,
            },
            Observation::Produced {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
                txn,
                leader_epoch,
            } => FrameRef::Produced {
                t_ms: *t_ms,
                stage: *stage,
                host,
                topic: *topic,
                partition: *partition,
                base_offset: *base_offset,
                change_ids,
                txn: *txn,
                leader_epoch: *leader_epoch,
            },
            Observation::Read {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            } => FrameRef::Read {
                t_ms: *t_ms,
                stage: *stage,
                host,
                topic: *topic,
                partition: *partition,
                base_offset: *base_offset,
                change_ids,
            },
            Observation::Routed {
                t_ms,
                change_id,
                to,
                reason,
                attempt,
            } => FrameRef::Routed {
                t_ms: *t_ms,
                change_id: *change_id,
                to: *to,
                reason: *reason,
                attempt: *attempt,
            },
            Observation::LakeCommit {
                t_ms,
                host,
                checkpoint_id,
                snapshot_id,
                rows,
                files,
            } => FrameRef::LakeCommit {
                t_ms: *t_ms,
                host,
                checkpoint_id: *checkpoint_id,
                snapshot_id: *snapshot_id,
                rows,
                files: *files,
            },
            Observation::Checkpoint {
                t_ms,
                host,
                checkpoint_id,
            } => FrameRef::Checkpoint {
                t_ms: *t_ms,
                host,
                checkpoint_id: *checkpoint_id,
            },
            Observation::Fault {
                t_ms,
                kind,
                target,
                phase,
            } => FrameRef::Fault {
                t_ms: *t_ms,
                kind,
                target,
                phase: *phase,
            },
            Observation::WorkloadEnd { t_ms } => FrameRef::WorkloadEnd { t_ms: *t_ms },
            Observation::RunEnd { t_ms, drained } => FrameRef::RunEnd {
                t_ms: *t_ms,
                drained: *drained,
            },
            Observation::FraudAlert {
                t_ms,
                change_id,
                score,
                reasons,
            } => FrameRef::FraudAlert {
                t_ms: *t_ms,
                change_id: *change_id,
                score: *score,
                reasons,
            },
            Observation::Aggregate {
                t_ms,
                account_id,
                window_start_ms,
                window_ms,
                spend_cents,
                payments,
            } => FrameRef::Aggregate {
                t_ms: *t_ms,
                account_id: *account_id,
                window_start_ms: *window_start_ms,
                window_ms: *window_ms,
                spend_cents: *spend_cents,
                payments: *payments,
            },
            Observation::Watermark {
                t_ms,
                watermark_ms,
                window_ms,
                late_dropped,
            } => FrameRef::Watermark {
                t_ms: *t_ms,
                watermark_ms: *watermark_ms,
                window_ms: *window_ms,
                late_dropped: *late_dropped,
            },
            Observation::TxnEnd {
                t_ms,
                txid,
                event_count,
            } => FrameRef::TxnEnd {
                t_ms: *t_ms,
                txid: *txid,
                event_count: *event_count,
            },
            Observation::KafkaTxn {
                t_ms,
                txn,
                producer,
                committed,
                timed_out,
            } => FrameRef::KafkaTxn {
                t_ms: *t_ms,
                txn: *txn,
                producer,
                committed: *committed,
                timed_out: *timed_out,
            },
            Observation::AbortMarker {
                t_ms,
                topic,
                partition,
                offsets,
                change_ids,
            } => FrameRef::AbortMarker {
                t_ms: *t_ms,
                topic: *topic,
                partition: *partition,
                offsets,
                change_ids,
            },
            Observation::SchemaDecision {
                t_ms,
                host,
                subject,
                table_version,
                id,
                reason,
            } => FrameRef::SchemaDecision {
                t_ms: *t_ms,
                host,
                subject,
                table_version: *table_version,
                id: *id,
                reason,
            },
            Observation::SnapshotChunk {
                t_ms,
                host,
                table,
                from_id,
                to_id,
                low_lsn,
                high_lsn,
                rows,
            } => FrameRef::SnapshotChunk {
                t_ms: *t_ms,
                host,
                table: *table,
                from_id: *from_id,
                to_id: *to_id,
                low_lsn: *low_lsn,
                high_lsn: *high_lsn,
                rows,
            },
            Observation::OffsetReset {
                t_ms,
                stage,
                host,
                topic,
                partition,
                from,
                to,
                log_start,
            } => FrameRef::OffsetReset {
                t_ms: *t_ms,
                stage: *stage,
                host,
                topic: *topic,
                partition: *partition,
                from: *from,
                to: *to,
                log_start: *log_start,
            },
            Observation::RetentionDeleted {
                t_ms,
                host,
                topic,
                partition,
                log_start,
            } => FrameRef::RetentionDeleted {
                t_ms: *t_ms,
                host,
                topic: *topic,
                partition: *partition,
                log_start: *log_start,
            },
            Observation::TruncationDetected {
                t_ms,
                stage,
                host,
                topic,
                partition,
                from,
                to,
            } => FrameRef::TruncationDetected {
                t_ms: *t_ms,
                stage: *stage,
                host,
                topic: *topic,
                partition: *partition,
                from: *from,
                to: *to,
            },
            Observation::LeaderChange {
                t_ms,
                host,
                topic,
                partition,
                epoch,
                log_end,
            } => FrameRef::LeaderChange {
                t_ms: *t_ms,
                host,
                topic: *topic,
                partition: *partition,
                epoch: *epoch,
                log_end: *log_end,
            },
            Observation::LakeRolledBack {
                t_ms,
                host,
                checkpoint_id,
                pre_committed_ms,
                change_ids,
            } => FrameRef::LakeRolledBack {
                t_ms: *t_ms,
                host,
                checkpoint_id: *checkpoint_id,
                pre_committed_ms: *pre_committed_ms,
                change_ids,
            },
            Observation::AppendedUnacknowledged {
                t_ms,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            } => FrameRef::AppendedUnacknowledged {
                t_ms: *t_ms,
                host,
                topic: *topic,
                partition: *partition,
                base_offset: *base_offset,
                change_ids,
            },
        }
    }
}

impl From<Frame> for Observation {
    fn from(f: Frame) -> Self {
        match f {
            Frame::Header(h) => Observation::Header(h),
            Frame::SourceCommit {
                t_ms,
                txid,
                changes,
            } => Observation::SourceCommit {
                t_ms,
                txid,
                changes,
            },
            Frame::Produced {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
                txn,
                leader_epoch,
            } => Observation::Produced {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
                txn,
                leader_epoch,
            },
            Frame::Read {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            } => Observation::Read {
                t_ms,
                stage,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            },
            Frame::Routed {
                t_ms,
                change_id,
                to,
                reason,
                attempt,
            } => Observation::Routed {
                t_ms,
                change_id,
                to,
                reason,
                attempt,
            },
            Frame::LakeCommit {
                t_ms,
                host,
                checkpoint_id,
                snapshot_id,
                rows,
                files,
            } => Observation::LakeCommit {
                t_ms,
                host,
                checkpoint_id,
                snapshot_id,
                rows,
                files,
            },
            Frame::Checkpoint {
                t_ms,
                host,
                checkpoint_id,
            } => Observation::Checkpoint {
                t_ms,
                host,
                checkpoint_id,
            },
            Frame::Fault {
                t_ms,
                kind,
                target,
                phase,
            } => Observation::Fault {
                t_ms,
                kind,
                target,
                phase,
            },
            Frame::WorkloadEnd { t_ms } => Observation::WorkloadEnd { t_ms },
            Frame::RunEnd { t_ms, drained } => Observation::RunEnd { t_ms, drained },
            Frame::FraudAlert {
                t_ms,
                change_id,
                score,
                reasons,
            } => Observation::FraudAlert {
                t_ms,
                change_id,
                score,
                reasons,
            },
            Frame::Aggregate {
                t_ms,
                account_id,
                window_start_ms,
                window_ms,
                spend_cents,
                payments,
            } => Observation::Aggregate {
                t_ms,
                account_id,
                window_start_ms,
                window_ms,
                spend_cents,
                payments,
            },
            Frame::Watermark {
                t_ms,
                watermark_ms,
                window_ms,
                late_dropped,
            } => Observation::Watermark {
                t_ms,
                watermark_ms,
                window_ms,
                late_dropped,
            },
            Frame::TxnEnd {
                t_ms,
                txid,
                event_count,
            } => Observation::TxnEnd {
                t_ms,
                txid,
                event_count,
            },
            Frame::KafkaTxn {
                t_ms,
                txn,
                producer,
                committed,
                timed_out,
            } => Observation::KafkaTxn {
                t_ms,
                txn,
                producer,
                committed,
                timed_out,
            },
            Frame::AbortMarker {
                t_ms,
                topic,
                partition,
                offsets,
                change_ids,
            } => Observation::AbortMarker {
                t_ms,
                topic,
                partition,
                offsets,
                change_ids,
            },
            Frame::SchemaDecision {
                t_ms,
                host,
                subject,
                table_version,
                id,
                reason,
            } => Observation::SchemaDecision {
                t_ms,
                host,
                subject,
                table_version,
                id,
                reason,
            },
            Frame::SnapshotChunk {
                t_ms,
                host,
                table,
                from_id,
                to_id,
                low_lsn,
                high_lsn,
                rows,
            } => Observation::SnapshotChunk {
                t_ms,
                host,
                table,
                from_id,
                to_id,
                low_lsn,
                high_lsn,
                rows,
            },
            Frame::OffsetReset {
                t_ms,
                stage,
                host,
                topic,
                partition,
                from,
                to,
                log_start,
            } => Observation::OffsetReset {
                t_ms,
                stage,
                host,
                topic,
                partition,
                from,
                to,
                log_start,
            },
            Frame::RetentionDeleted {
                t_ms,
                host,
                topic,
                partition,
                log_start,
            } => Observation::RetentionDeleted {
                t_ms,
                host,
                topic,
                partition,
                log_start,
            },
            Frame::TruncationDetected {
                t_ms,
                stage,
                host,
                topic,
                partition,
                from,
                to,
            } => Observation::TruncationDetected {
                t_ms,
                stage,
                host,
                topic,
                partition,
                from,
                to,
            },
            Frame::LeaderChange {
                t_ms,
                host,
                topic,
                partition,
                epoch,
                log_end,
            } => Observation::LeaderChange {
                t_ms,
                host,
                topic,
                partition,
                epoch,
                log_end,
            },
            Frame::LakeRolledBack {
                t_ms,
                host,
                checkpoint_id,
                pre_committed_ms,
                change_ids,
            } => Observation::LakeRolledBack {
                t_ms,
                host,
                checkpoint_id,
                pre_committed_ms,
                change_ids,
            },
            Frame::AppendedUnacknowledged {
                t_ms,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            } => Observation::AppendedUnacknowledged {
                t_ms,
                host,
                topic,
                partition,
                base_offset,
                change_ids,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example lines of the module documentation, which must stay valid.
    const DOC_EXAMPLES: [&str; 25] = [
        r#"{"type":"header","scenario":"card-clean","seed":1,"replay":"nrtsim run scenarios/card-clean.toml --seed 1","nrtsim_version":"0.1.0","scenario_toml":""}"#,
        r#"{"type":"source_commit","t_ms":5,"txid":1,"changes":[{"lsn":1,"key":{"table":"accounts","id":7},"op":"u","digest":11,"poison":false,"payment":null,"balance_cents":1250}]}"#,
        r#"{"type":"produced","t_ms":6,"stage":"cdc","host":"cdc","topic":"raw","partition":0,"base_offset":0,"change_ids":[1]}"#,
        r#"{"type":"read","t_ms":7,"stage":"standardize","host":"standardize-0","topic":"raw","partition":0,"base_offset":0,"change_ids":[1]}"#,
        r#"{"type":"routed","t_ms":8,"change_id":1,"to":"redo","reason":"reference_miss","attempt":1}"#,
        r#"{"type":"lake_commit","t_ms":9,"host":"lake-0","checkpoint_id":1,"snapshot_id":1,"rows":[{"change_id":1,"key":{"table":"accounts","id":7},"digest":11,"folded":false,"balance_cents":1250}],"files":{"files_written":1,"live_files":1,"small_files":1,"small_files_written":1}}"#,
        r#"{"type":"checkpoint","t_ms":9,"host":"lake-0","checkpoint_id":1}"#,
        r#"{"type":"fault","t_ms":3,"kind":"broker-crash","target":"broker-1","phase":"start"}"#,
        r#"{"type":"workload_end","t_ms":10}"#,
        r#"{"type":"run_end","t_ms":12,"drained":true}"#,
        r#"{"type":"fraud_alert","t_ms":11,"change_id":2,"score":60,"reasons":"velocity"}"#,
        r#"{"type":"aggregate","t_ms":11,"account_id":7,"window_start_ms":0,"window_ms":60000,"spend_cents":1250,"payments":1}"#,
        r#"{"type":"watermark","t_ms":11,"watermark_ms":60000,"window_ms":60000,"late_dropped":0}"#,
        r#"{"type":"txn_end","t_ms":6,"txid":1,"event_count":1}"#,
        r#"{"type":"produced","t_ms":13,"stage":"enrich","host":"enrich-0","topic":"enriched","partition":0,"base_offset":4,"change_ids":[1],"txn":3,"leader_epoch":2}"#,
        r#"{"type":"abort_marker","t_ms":15,"topic":"enriched","partition":0,"offsets":[4],"change_ids":[1]}"#,
        r#"{"type":"kafka_txn","t_ms":14,"txn":3,"producer":"enrich-0","committed":false,"timed_out":true}"#,
        r#"{"type":"schema_decision","t_ms":16,"host":"standardize-0","subject":"standard-bank.accounts","table_version":2,"id":3,"reason":""}"#,
        r#"{"type":"snapshot_chunk","t_ms":2,"host":"cdc","table":"accounts","from_id":0,"to_id":null,"low_lsn":0,"high_lsn":1,"rows":[1]}"#,
        r#"{"type":"offset_reset","t_ms":17,"stage":"lake","host":"lake-0","topic":"enriched","partition":2,"from":120,"to":480,"log_start":300}"#,
        r#"{"type":"retention_deleted","t_ms":16,"host":"broker-1","topic":"enriched","partition":2,"log_start":300}"#,
        r#"{"type":"truncation_detected","t_ms":18,"stage":"standardize","host":"standardize-0","topic":"raw","partition":3,"from":5200,"to":4870}"#,
        r#"{"type":"leader_change","t_ms":19,"host":"broker-2","topic":"raw","partition":3,"epoch":2,"log_end":4870}"#,
        r#"{"type":"lake_rolled_back","t_ms":20,"host":"lake-0","checkpoint_id":4,"pre_committed_ms":9,"change_ids":[1]}"#,
        r#"{"type":"appended_unacknowledged","t_ms":21,"host":"broker-0","topic":"critical","partition":1,"base_offset":7,"change_ids":[1]}"#,
    ];

    #[test]
    fn documented_lines_parse_and_print_back_the_same() {
        for line in DOC_EXAMPLES {
            let o: Observation = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&o).unwrap(), line);
        }
        assert_eq!(
            parse_jsonl(&DOC_EXAMPLES.join("\n")).unwrap().len(),
            DOC_EXAMPLES.len()
        );
    }
}
