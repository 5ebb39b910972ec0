//! The snapshot file format: a versioned, checksummed dump of the state
//! machine's column families.
//!
//! ```text
//! "RAFTQSNAP1\n"
//! u32 meta_len, meta (SnapshotMeta as JSON)
//! { u8 cf (0 = sm, 1 = events, 2 = stamps), u32 key_len, key, u32 value_len, value }*
//! u8 0xFF (end marker)
//! u32 crc32 of every byte before it
//! ```
//!
//! Generic key/value records mean the format needs no change when the state
//! machine gains a key; the checksum and end marker turn a torn or truncated
//! file (a crash mid-write, a cut transfer) into a clear error instead of a
//! silently partial state.

use std::io::Write;

use super::db::StoreError;
use super::keys::SM_CFS;
use super::types::SnapshotMeta;

const MAGIC: &[u8] = b"RAFTQSNAP1\n";
const END: u8 = 0xFF;

/// Writes a snapshot to `out` (a buffer for Raft, a file for backups),
/// checksumming as it goes.
pub struct Writer<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, meta: &SnapshotMeta) -> Result<Self, StoreError> {
        let meta = serde_json::to_vec(meta)?;
        let mut writer = Writer { out, crc: crc32fast::Hasher::new() };
        writer.put(MAGIC)?;
        writer.put_len(meta.len())?;
        writer.put(&meta)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.crc.update(bytes);
        self.out.write_all(bytes)?;
        Ok(())
    }

    fn put_len(&mut self, len: usize) -> Result<(), StoreError> {
        let len = u32::try_from(len)
            .map_err(|_| StoreError::Corrupt("snapshot record over 4 GiB".into()))?;
        self.put(&len.to_be_bytes())
    }

    pub fn record(&mut self, cf_index: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        debug_assert!((cf_index as usize) < SM_CFS.len());
        self.put(&[cf_index])?;
        self.put_len(key.len())?;
        self.put(key)?;
        self.put_len(value.len())?;
        self.put(value)
    }

    /// Writes the end marker and checksum; returns the output.
    pub fn finish(mut self) -> Result<W, StoreError> {
        self.put(&[END])?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A validated snapshot: the checksum matched and every record is well formed.
pub struct Parsed<'a> {
    pub meta: SnapshotMeta,
    /// (cf index, key, value)
    pub records: Vec<(u8, &'a [u8], &'a [u8])>,
}

pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("snapshot: {what}"));
    if bytes.len() < MAGIC.len() + 4 + 1 + 4 || !bytes.starts_with(MAGIC) {
        return Err(corrupt("not a raftq snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_be_bytes(crc.try_into().map_err(|_| corrupt("short"))?);
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch (torn or truncated file)"));
    }
    let mut cursor = Cursor { bytes: body, pos: MAGIC.len() };
    let meta_len = cursor.len()?;
    let meta: SnapshotMeta = serde_json::from_slice(cursor.take(meta_len)?)?;
    let mut records = Vec::new();
    loop {
        let cf_index = *cursor.take(1)?.first().ok_or_else(|| corrupt("short"))?;
        if cf_index == END {
            break;
        }
        if cf_index as usize >= SM_CFS.len() {
            return Err(corrupt("unknown column family"));
        }
        let key_len = cursor.len()?;
        let key = cursor.take(key_len)?;
        let value_len = cursor.len()?;
        let value = cursor.take(value_len)?;
        records.push((cf_index, key, value));
    }
    if cursor.pos != body.len() {
        return Err(corrupt("trailing bytes after end marker"));
    }
    Ok(Parsed { meta, records })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end =
            end.ok_or_else(|| StoreError::Corrupt("snapshot: record runs past the end".into()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let raw = self.take(4)?;
        let arr: [u8; 4] =
            raw.try_into().map_err(|_| StoreError::Corrupt("snapshot: short".into()))?;
        Ok(u32::from_be_bytes(arr) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let meta = SnapshotMeta::default();
        let mut w = Writer::new(Vec::new(), &meta).unwrap();
        w.record(0, b"applied", b"null").unwrap();
        w.record(1, b"q\0\0\0\0\0\0\0\x01", b"hello").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.records[1], (1, &b"q\0\0\0\0\0\0\0\x01"[..], &b"hello"[..]));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(parse(&flipped).is_err(), "bit flip at {i} accepted");
        }
    }
}
