//! The node's persisted identity: a node id that survives restarts of the
//! same data dir, so a restarted node rejoins as itself.

use std::path::Path;

use crate::raft::types::NodeId;

/// The file in the data dir that holds the node id.
pub const NODE_ID_FILE: &str = "node_id";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} does not hold a node id ({content:?})")]
    Corrupt { path: String, content: String },
    #[error("--node-id {flag} but the data dir belongs to node {stored}; use another data dir")]
    Mismatch { flag: NodeId, stored: NodeId },
    #[error("node id 0 is reserved")]
    Zero,
}

/// Loads the node id from `data_dir`, or stores `flag` (or a random id) on
/// first start. Returns the id and whether it was newly created.
pub fn load_or_create(
    data_dir: &Path,
    flag: Option<NodeId>,
) -> Result<(NodeId, bool), IdentityError> {
    let path = data_dir.join(NODE_ID_FILE);
    let display = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(content) => {
            let stored: NodeId = content.trim().parse().map_err(|_| IdentityError::Corrupt {
                path: display.clone(),
                content: content.clone(),
            })?;
            match flag {
                Some(flag) if flag != stored => Err(IdentityError::Mismatch { flag, stored }),
                _ => Ok((stored, false)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = match flag {
                Some(0) => return Err(IdentityError::Zero),
                Some(id) => id,
                // Random ids let nodes join without coordinating; 0 is skipped
                // so it can never be confused with "unset".
                None => rand::random::<NodeId>().max(1),
            };
            write_durably(&path, &id.to_string())
                .map_err(|source| IdentityError::Write { path: display, source })?;
            Ok((id, true))
        }
        Err(source) => Err(IdentityError::Read { path: display, source }),
    }
}

fn write_durably(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_across_restarts_and_flags_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let (id, created) = load_or_create(dir.path(), None).unwrap();
        assert!(created && id != 0);
        assert_eq!(load_or_create(dir.path(), None).unwrap(), (id, false));
        assert_eq!(load_or_create(dir.path(), Some(id)).unwrap(), (id, false));
        assert!(matches!(
            load_or_create(dir.path(), Some(id.wrapping_add(1).max(1))),
            Err(IdentityError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_flag_sets_the_first_id_and_garbage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_or_create(dir.path(), Some(7)).unwrap(), (7, true));
        std::fs::write(dir.path().join(NODE_ID_FILE), "not a number").unwrap();
        assert!(matches!(load_or_create(dir.path(), None), Err(IdentityError::Corrupt { .. })));
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(load_or_create(other.path(), Some(0)), Err(IdentityError::Zero)));
    }
}
