//! The snapshot file format: a versioned, checksummed dump of the state
//! machine's column families, and the file openraft moves it in.
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
//!
//! A snapshot holds every pending event, so it can be gigabytes: it is only
//! ever streamed. [`Writer`] writes to any `Write` (a buffered file), and
//! [`Reader`] reads one record at a time from any `Read` into buffers the
//! caller reuses, checksumming as it goes, so memory stays at the largest
//! record whatever the file's size. Because the checksum is only known at
//! the end, a reader's records are not trustworthy until [`Reader::next_record`]
//! answered `None`: whoever must not act on a torn file validates it in a
//! first pass ([`Reader::validate`]) and reads the records in a second.
//! [`SnapshotFile`] is the snapshot data openraft sends from and receives
//! into: a file on disk, never a buffer. [`lifecycle`] builds, installs and
//! recovers the state machine's snapshots in this format.

pub mod lifecycle;

pub use lifecycle::write_view;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::db::{cf, StoreError};
use super::keys::SM_CFS;
use super::types::SnapshotMeta;

const MAGIC: &[u8; 11] = b"RAFTQSNAP1\n";
const END: u8 = 0xFF;

/// The largest key, value or meta a snapshot may hold. Larger than any event
/// the API accepts in practice; it bounds what a corrupt length field can
/// make a reader allocate before the checksum gives the corruption away.
pub const MAX_FIELD: usize = 256 << 20;

const TRUNCATED: &str = "truncated before its end marker and checksum (torn or cut-short file)";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("snapshot: {what}"))
}

/// Writes a snapshot to `out` (a buffered file: Raft's or a backup),
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
            .ok()
            .filter(|&len| len as usize <= MAX_FIELD)
            .ok_or_else(|| corrupt("record over the 256 MiB field limit"))?;
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

/// Reads a snapshot from `inp` one record at a time, checksumming as it
/// goes. Give it a buffered input: it reads fields, not blocks.
pub struct Reader<R: Read> {
    inp: R,
    crc: crc32fast::Hasher,
    meta: SnapshotMeta,
    finished: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the header and the meta (not yet checksummed: see the module docs).
    pub fn new(inp: R) -> Result<Self, StoreError> {
        let mut reader = Reader {
            inp,
            crc: crc32fast::Hasher::new(),
            meta: Default::default(),
            finished: false,
        };
        let mut magic = [0u8; MAGIC.len()];
        reader.fill(&mut magic).map_err(|_| corrupt("not a raftq snapshot"))?;
        if &magic != MAGIC {
            return Err(corrupt("not a raftq snapshot"));
        }
        let mut meta = Vec::new();
        reader.field(&mut meta)?;
        reader.meta = serde_json::from_slice(&meta)?;
        Ok(reader)
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inp.read_exact(buf).map_err(truncated)?;
        self.crc.update(buf);
        Ok(())
    }

    /// A length-prefixed field into `buf`. Read through `take`, so a corrupt
    /// length allocates no more than the bytes that really follow.
    fn field(&mut self, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        let mut len = [0u8; 4];
        self.fill(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FIELD {
            return Err(corrupt("field over the 256 MiB limit"));
        }
        buf.clear();
        (&mut self.inp).take(len as u64).read_to_end(buf)?;
        if buf.len() != len {
            return Err(corrupt(TRUNCATED));
        }
        self.crc.update(buf);
        Ok(())
    }

    /// The next record's cf index, with its key and value in `key` and
    /// `value`; `None` once the end marker, the checksum and the end of the
    /// input have been checked.
    pub fn next_record(
        &mut self,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<Option<u8>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        let mut cf_index = [0u8];
        self.fill(&mut cf_index)?;
        let [cf_index] = cf_index;
        if cf_index == END {
            let mut crc = [0u8; 4];
            self.inp.read_exact(&mut crc).map_err(truncated)?;
            if self.crc.clone().finalize() != u32::from_be_bytes(crc) {
                return Err(corrupt("checksum mismatch (torn or corrupt file)"));
            }
            if self.inp.read(&mut [0u8])? != 0 {
                return Err(corrupt("trailing bytes after the checksum"));
            }
            self.finished = true;
            return Ok(None);
        }
        if cf_index as usize >= SM_CFS.len() {
            return Err(corrupt("unknown column family"));
        }
        self.field(key)?;
        self.field(value)?;
        Ok(Some(cf_index))
    }

    /// Reads to the end, checking everything; the meta of a sound snapshot.
    pub fn validate(mut self) -> Result<SnapshotMeta, StoreError> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        while self.next_record(&mut key, &mut value)?.is_some() {}
        Ok(self.meta)
    }
}

/// The second pass: writes a validated snapshot's records into `db`, after
/// whatever `batch` already holds, in batches of about `batch_bytes` (the
/// last one synced, which makes the unsynced ones before it durable too),
/// skipping those `keep` refuses. Returns how many records it wrote.
pub fn load_into<R: Read>(
    db: &rocksdb::DB,
    mut reader: Reader<R>,
    mut batch: rocksdb::WriteBatch,
    batch_bytes: usize,
    mut keep: impl FnMut(u8, &[u8]) -> bool,
) -> Result<usize, StoreError> {
    let cfs = SM_CFS.iter().map(|name| cf(db, name)).collect::<Result<Vec<_>, _>>()?;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut written = 0;
    while let Some(cf_index) = reader.next_record(&mut key, &mut value)? {
        if !keep(cf_index, &key) {
            continue;
        }
        let family = cfs.get(cf_index as usize).ok_or_else(|| corrupt("unknown column family"))?;
        batch.put_cf(family, &key, &value);
        written += 1;
        if batch.size_in_bytes() >= batch_bytes {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(written)
}

fn truncated(e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        corrupt(TRUNCATED)
    } else {
        e.into()
    }
}

/// A snapshot as openraft holds it (its `SnapshotData`): an open file.
///
/// Built snapshots are `current.snap` itself. A snapshot being received goes
/// into a fresh temp file that is removed when this is dropped, unless it was
/// installed (openraft drops a received snapshot that turned out to be stale
/// without telling the state machine).
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    temp: TempPath,
}

/// Removes the file at its path when dropped, unless kept.
#[derive(Debug)]
pub struct TempPath(Option<PathBuf>);

impl TempPath {
    /// Where the temp file is (`None`: not a temp file).
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    /// Renames the file to `to`, after which it is no longer temporary.
    pub fn persist(mut self, to: &Path) -> std::io::Result<()> {
        let from = self.0.take().ok_or_else(|| std::io::Error::other("not a temp file"))?;
        std::fs::rename(&from, to).inspect_err(|_| self.0 = Some(from))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Temp files of the snapshot dir end with this; any left at startup are
/// debris of a crash.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A new, uniquely named file in `dir` for writing: `<prefix>-<random>.tmp`.
pub fn create_temp(dir: &Path, prefix: &str) -> std::io::Result<(std::fs::File, TempPath)> {
    let path = dir.join(format!("{prefix}-{:016x}{TEMP_SUFFIX}", rand::random::<u64>()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    Ok((file, TempPath(Some(path))))
}

impl SnapshotFile {
    /// An open snapshot file (read from where it is positioned). The
    /// handle, not the path, is what is read: `current.snap` may be
    /// replaced meanwhile.
    pub fn from_std(file: std::fs::File) -> Self {
        SnapshotFile { file: tokio::fs::File::from_std(file), temp: TempPath(None) }
    }

    /// A fresh temp file in `dir` to receive a snapshot into.
    pub fn receive_into(dir: &Path) -> std::io::Result<Self> {
        let (file, temp) = create_temp(dir, "receiving")?;
        Ok(SnapshotFile { file: tokio::fs::File::from_std(file), temp })
    }

    /// The blocking file (once every write openraft started has landed) and,
    /// for a file this node received into, its temp path.
    pub async fn into_parts(self) -> (std::fs::File, TempPath) {
        (self.file.into_std().await, self.temp)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
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

    fn records(bytes: &[u8]) -> Result<Vec<(u8, Vec<u8>, Vec<u8>)>, StoreError> {
        let mut reader = Reader::new(bytes)?;
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        while let Some(cf) = reader.next_record(&mut key, &mut value)? {
            out.push((cf, key.clone(), value.clone()));
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let records = records(&bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], (1, b"q\0\0\0\0\0\0\0\x01".to_vec(), b"hello".to_vec()));
        assert_eq!(Reader::new(&bytes[..]).unwrap().validate().unwrap(), SnapshotMeta::default());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let bytes = sample();
        let validate = |bytes: &[u8]| Reader::new(bytes).and_then(Reader::validate);
        for cut in 0..bytes.len() {
            assert!(validate(&bytes[..cut]).is_err(), "truncated at {cut} accepted");
            assert!(records(&bytes[..cut]).is_err(), "truncated at {cut} read to the end");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(validate(&flipped).is_err(), "bit flip at {i} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(validate(&longer).is_err(), "trailing byte accepted");
    }

    /// Records every read the snapshot reader asks of its input.
    struct Probe<'a> {
        inner: &'a [u8],
        largest_read: usize,
        total: usize,
    }

    impl Read for Probe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest_read = self.largest_read.max(buf.len());
            let n = self.inner.read(buf)?;
            self.total += n;
            Ok(n)
        }
    }

    #[test]
    fn a_large_snapshot_is_read_a_record_at_a_time() {
        let value = vec![b'x'; 4096];
        let mut w = Writer::new(Vec::new(), &SnapshotMeta::default()).unwrap();
        for i in 0u32..2048 {
            w.record(1, &i.to_be_bytes(), &value).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert!(bytes.len() > 8 << 20);

        let mut probe = Probe { inner: &bytes, largest_read: 0, total: 0 };
        let mut reader = Reader::new(&mut probe).unwrap();
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut count = 0;
        while reader.next_record(&mut key, &mut value).unwrap().is_some() {
            count += 1;
        }
        assert_eq!(count, 2048);
        // Nothing beyond one record was ever asked for or held.
        assert!(value.capacity() <= 2 * 4096, "value buffer grew to {}", value.capacity());
        drop(reader);
        assert_eq!(probe.total, bytes.len());
        assert!(probe.largest_read <= 2 * 4096, "read {} bytes at once", probe.largest_read);
    }

    #[test]
    fn a_field_over_the_limit_is_refused_on_both_ends() {
        let mut w = Writer::new(Vec::new(), &SnapshotMeta::default()).unwrap();
        let huge = vec![0u8; MAX_FIELD + 1];
        assert!(w.record(1, b"k", &huge).is_err());
        // A length field claiming more than the limit, however much follows.
        let mut bytes = sample();
        let at = bytes.len() - 4 - 1 - 5 - 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(records(&bytes).is_err());
    }
}
