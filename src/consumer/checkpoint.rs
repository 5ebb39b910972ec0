//! The consumer's checkpoint file: the last processed seq as decimal text,
//! replaced atomically so that a crash leaves either the old or the new
//! value, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::queue::Seq;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Starting over silently would repeat or skip events.
    #[error("checkpoint {path} does not hold a seq: {text:?}")]
    Garbled { path: PathBuf, text: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// The seq stored in `path`; `None` if the file does not exist.
pub fn read(path: &Path) -> Result<Option<Seq>, CheckpointError> {
    match fs::read_to_string(path) {
        Ok(text) => match text.trim().parse() {
            Ok(seq) => Ok(Some(seq)),
            Err(_) => Err(CheckpointError::Garbled {
                path: path.to_path_buf(),
                text: text.chars().take(100).collect(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Store `seq` in `path`: write `path.tmp`, fsync it, rename it over
/// `path`, fsync the directory (the rename is durable only then).
pub fn write(path: &Path, seq: Seq) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = path.file_name().unwrap_or(path.as_os_str()).to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    writeln!(file, "{seq}").map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.ckpt");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, 42).unwrap();
        assert_eq!(read(&path).unwrap(), Some(42));
        write(&path, u64::MAX).unwrap();
        assert_eq!(read(&path).unwrap(), Some(u64::MAX));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", u64::MAX));
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["c.ckpt"], "no temporary file is left behind");
    }

    #[test]
    fn garbage_is_an_error_not_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.ckpt");
        for text in ["", "abc", "-1", "12 13"] {
            fs::write(&path, text).unwrap();
            assert!(matches!(read(&path), Err(CheckpointError::Garbled { .. })), "{text:?}");
        }
        fs::write(&path, " 7\n").unwrap();
        assert_eq!(read(&path).unwrap(), Some(7));
    }

    #[test]
    fn unwritable_place_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("c.ckpt");
        assert!(matches!(write(&path, 1), Err(CheckpointError::Io { .. })));
    }
}
