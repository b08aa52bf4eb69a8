//! The last good snapshot on disk, so a restart serves at once even with the config
//! source down (issue 3, "Persistence").
//!
//! Format (version 1), all integers big-endian:
//!
//! ```text
//! magic "ATTACHE-SNAPSHOT" (16 bytes) | format u32 = 1
//! str version | str revision | u64 endpoints generation
//! u32 type count, then per type: u8 type index | u32 count | per resource: str name | bytes body
//! SHA-256 (32 bytes) of everything before it
//! ```
//!
//! `str`/`bytes` are a u32 length then the bytes. Resource versions are not stored: they
//! are recomputed from the bodies, so a file can never claim a version its content lacks.
//! Writes are atomic: a temp file in the same directory, fsync, rename, fsync of the
//! directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Error, Resource, ResourceMap, ResourceType, Result, Snapshot};

const MAGIC: &[u8; 16] = b"ATTACHE-SNAPSHOT";
/// The format version this build writes and reads.
pub(crate) const FORMAT: u32 = 1;
/// The state file's name inside `--state-dir`.
pub(crate) const FILE_NAME: &str = "snapshot.bin";

/// Encodes `snapshot` in the state file format.
pub(crate) fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + snapshot
            .types
            .values()
            .flat_map(|m| m.values())
            .map(|r| r.body.len() + r.name.len() + 8)
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_be_bytes());
    put_bytes(&mut out, snapshot.version.as_bytes());
    put_bytes(&mut out, snapshot.revision.as_bytes());
    out.extend_from_slice(&snapshot.endpoints_generation.to_be_bytes());
    out.extend_from_slice(&(snapshot.types.len() as u32).to_be_bytes());
    for (kind, map) in &snapshot.types {
        out.push(kind.index());
        out.extend_from_slice(&(map.len() as u32).to_be_bytes());
        for r in map.values() {
            put_bytes(&mut out, r.name.as_bytes());
            put_bytes(&mut out, &r.body);
        }
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Decodes a state file's content; `path` only names it in errors.
pub(crate) fn decode(path: &Path, data: &[u8]) -> Result<Snapshot> {
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if data.len() < MAGIC.len() + 4 + 32 || &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not an attache snapshot file"));
    }
    let mut r = Reader {
        data: &data[MAGIC.len()..],
    };
    let format = r.u32().ok_or_else(|| corrupt("truncated header"))?;
    if format != FORMAT {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            found: format,
            supported: FORMAT,
        });
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader {
        data: &body[MAGIC.len() + 4..],
    };
    let text = |b: Option<&[u8]>, what: &str| -> Result<String> {
        let b = b.ok_or_else(|| corrupt(&format!("truncated {what}")))?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(&format!("{what} is not UTF-8")))
    };
    let version = text(r.bytes(), "version")?;
    let revision = text(r.bytes(), "revision")?;
    let generation = r
        .u64()
        .ok_or_else(|| corrupt("truncated endpoints generation"))?;
    let type_count = r.u32().ok_or_else(|| corrupt("truncated type count"))?;
    let mut types = BTreeMap::new();
    for _ in 0..type_count.min(ResourceType::ALL.len() as u32 + 1) {
        let index = r.u8().ok_or_else(|| corrupt("truncated type index"))?;
        let kind = ResourceType::from_index(index)
            .ok_or_else(|| corrupt(&format!("unknown type index {index}")))?;
        let count = r.u32().ok_or_else(|| corrupt("truncated resource count"))?;
        let mut map = ResourceMap::new();
        for _ in 0..count {
            let name = text(r.bytes(), "resource name")?;
            let body = r
                .bytes()
                .ok_or_else(|| corrupt(&format!("truncated body of {kind} {name:?}")))?;
            map.insert(
                name.clone(),
                Resource::new(name, Bytes::copy_from_slice(body)),
            );
        }
        types.insert(kind, map);
    }
    if !r.data.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Snapshot::from_parts(version, revision, generation, types))
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(usize::try_from(n).ok()?)
    }
}

/// Writes `snapshot` to `dir/snapshot.bin` atomically, creating `dir` if needed.
pub(crate) fn write(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf> {
    let path = dir.join(FILE_NAME);
    fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
        move |source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
    std::fs::create_dir_all(dir).map_err(io("create directory for", dir))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp-{}", std::process::id()));
    let data = encode(snapshot);
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(&data).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Reads `dir/snapshot.bin`; `Ok(None)` when there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<Snapshot>> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(data) => decode(&path, &data).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            action: "read",
            path,
            source,
        }),
    }
}
