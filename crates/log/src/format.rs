//! On-disk format of the log file. See `docs/ARCHITECTURE.md` ("The raft log") for the
//! crash-consistency argument.
//!
//! ```text
//! file    := file_header record*
//! file_header := "SQLRAFTL" version:u32le reserved:u32le          (16 bytes)
//! record  := len:u32le payload_crc:u32le header_crc:u32le payload (len bytes)
//! payload := item*
//! item    := kind:u8 len:u32le bytes
//! ```
//!
//! Entries, hard states and conf states are prost 0.11 encodings; a segment's base and
//! a compaction mark are fixed little-endian fields ([`Base`], [`Compact`]). The log is
//! a sequence of such files (segments); each segment's first record starts with its
//! [`Base`] and repeats the hard state and conf state, so that older segments can be
//! deleted once every entry in them is compacted away.
//!
//! One record is written per [`crate::LogStore::write`] and followed by one fdatasync, so
//! a crash can damage only the last record of the last segment. `header_crc` covers `len` and `payload_crc`,
//! which lets a reader tell a torn tail from corruption in the middle of the file.

use prost_011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState};

pub(crate) const MAGIC: &[u8; 8] = b"SQLRAFTL";
pub(crate) const VERSION: u32 = 1;
pub(crate) const FILE_HEADER_LEN: u64 = 16;
pub(crate) const RECORD_HEADER_LEN: usize = 12;
/// Upper bound of one record; a header announcing more is corrupt, not torn.
pub(crate) const MAX_RECORD_BYTES: u32 = 1 << 30;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_BASE: u8 = 4;
const KIND_COMPACT: u8 = 5;
const ITEM_HEADER_LEN: usize = 5;

pub(crate) fn file_header() -> [u8; FILE_HEADER_LEN as usize] {
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// One decoded item of a record. Entries keep their position in the file so that the
/// store can index them without holding them in memory.
pub(crate) enum Item {
    Entry {
        entry: Entry,
        /// Offset of the encoded entry in the file and its length.
        pos: u64,
        len: u32,
    },
    HardState(HardState),
    ConfState(ConfState),
    Base(Base),
    Compact(Compact),
}

/// Where a segment starts: its first entry will have index `next_index`, and the entry
/// before it has term `prev_term`. `reset`: the log was replaced by a snapshot here, so
/// the entries of earlier segments are gone; otherwise `next_index` must follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Base {
    pub next_index: u64,
    pub prev_term: u64,
    pub reset: bool,
}

/// Entries up to `index` (whose term is `term`) are compacted away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compact {
    pub index: u64,
    pub term: u64,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Builds one record. `entry_spans` receives, for each entry, its offset relative to the
/// start of the record and its encoded length.
pub(crate) struct RecordBuilder {
    buf: Vec<u8>,
}

impl RecordBuilder {
    pub(crate) fn new() -> Self {
        RecordBuilder {
            buf: vec![0u8; RECORD_HEADER_LEN],
        }
    }

    /// Appends an entry and returns its offset within the record and its length.
    pub(crate) fn entry(&mut self, entry: &Entry) -> (u64, u32) {
        let len = entry.encoded_len();
        self.item_header(KIND_ENTRY, len);
        let at = self.buf.len() as u64;
        // Encoding into a Vec cannot run out of capacity.
        let _ = entry.encode(&mut self.buf);
        (at, len as u32)
    }

    pub(crate) fn hard_state(&mut self, hs: &HardState) {
        self.item_header(KIND_HARD_STATE, hs.encoded_len());
        let _ = hs.encode(&mut self.buf);
    }

    pub(crate) fn conf_state(&mut self, cs: &ConfState) {
        self.item_header(KIND_CONF_STATE, cs.encoded_len());
        let _ = cs.encode(&mut self.buf);
    }

    pub(crate) fn base(&mut self, base: Base) {
        self.item_header(KIND_BASE, 17);
        self.buf.extend_from_slice(&base.next_index.to_le_bytes());
        self.buf.extend_from_slice(&base.prev_term.to_le_bytes());
        self.buf.push(u8::from(base.reset));
    }

    pub(crate) fn compact(&mut self, compact: Compact) {
        self.item_header(KIND_COMPACT, 16);
        self.buf.extend_from_slice(&compact.index.to_le_bytes());
        self.buf.extend_from_slice(&compact.term.to_le_bytes());
    }

    fn item_header(&mut self, kind: u8, len: usize) {
        self.buf.push(kind);
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.buf.len() - RECORD_HEADER_LEN
    }

    /// Fills in the record header and returns the bytes to write.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = self.payload_len() as u32;
        let payload_crc = crc32fast::hash(&self.buf[RECORD_HEADER_LEN..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&payload_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&self.buf[0..8]);
        self.buf[8..12].copy_from_slice(&header_crc.to_le_bytes());
        self.buf
    }
}

/// A parsed record header.
pub(crate) struct RecordHeader {
    pub(crate) len: u32,
    pub(crate) payload_crc: u32,
}

/// Parses a record header; `None` when its checksum does not match.
pub(crate) fn parse_record_header(bytes: &[u8; RECORD_HEADER_LEN]) -> Option<RecordHeader> {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if crc32fast::hash(&bytes[0..8]) != word(8) {
        return None;
    }
    Some(RecordHeader {
        len: word(0),
        payload_crc: word(4),
    })
}

/// Decodes the items of a payload whose checksum was verified. `payload_pos` is the
/// file offset of the payload's first byte.
pub(crate) fn decode_items(payload: &[u8], payload_pos: u64) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut at = 0usize;
    while at < payload.len() {
        if payload.len() - at < ITEM_HEADER_LEN {
            return Err("item header cut short".into());
        }
        let kind = payload[at];
        let len = u32::from_le_bytes([
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
            payload[at + 4],
        ]) as usize;
        at += ITEM_HEADER_LEN;
        if payload.len() - at < len {
            return Err(format!("item of {len} bytes overruns its record"));
        }
        let bytes = &payload[at..at + len];
        let item = match kind {
            KIND_ENTRY => Item::Entry {
                entry: Entry::decode(bytes).map_err(|e| format!("bad entry: {e}"))?,
                pos: payload_pos + at as u64,
                len: len as u32,
            },
            KIND_HARD_STATE => Item::HardState(
                HardState::decode(bytes).map_err(|e| format!("bad hard state: {e}"))?,
            ),
            KIND_CONF_STATE => Item::ConfState(
                ConfState::decode(bytes).map_err(|e| format!("bad conf state: {e}"))?,
            ),
            KIND_BASE if len == 17 && bytes[16] <= 1 => Item::Base(Base {
                next_index: u64_at(bytes, 0),
                prev_term: u64_at(bytes, 8),
                reset: bytes[16] == 1,
            }),
            KIND_COMPACT if len == 16 => Item::Compact(Compact {
                index: u64_at(bytes, 0),
                term: u64_at(bytes, 8),
            }),
            KIND_BASE | KIND_COMPACT => return Err(format!("item of kind {kind} has {len} bytes")),
            other => return Err(format!("unknown item kind {other}")),
        };
        items.push(item);
        at += len;
    }
    Ok(items)
}

/// Decodes one entry read back from the file at a position recorded by the index.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, prost_011::DecodeError> {
    Entry::decode(bytes)
}
