//! Pack files (gitformat-pack, version 2) of whole objects: git resolves deltas if it
//! wants them, and the packages served here are a few files per version, so a pack of
//! undeltified objects costs little and needs no object database. Headers are written
//! by `gix-pack`, object ids computed by `gix-object`.

use std::io::Write as _;

use flate2::write::ZlibEncoder;
use gix_hash::ObjectId;
use gix_object::Kind;

/// One object to pack.
pub struct Object<'a> {
    pub kind: Kind,
    pub data: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack: {0}")]
    Io(#[from] std::io::Error),
    #[error("pack: too many objects")]
    TooMany,
    #[error("pack: hashing: {0}")]
    Hash(String),
}

/// The id git gives `data` as an object of `kind`.
pub fn object_id(kind: Kind, data: &[u8]) -> Result<ObjectId, PackError> {
    gix_object::compute_hash(gix_hash::Kind::Sha1, kind, data)
        .map_err(|e| PackError::Hash(e.to_string()))
}

/// A complete pack of `objects`, trailer included.
pub fn write(objects: &[Object<'_>]) -> Result<Vec<u8>, PackError> {
    let count = u32::try_from(objects.len()).map_err(|_| PackError::TooMany)?;
    let mut out = Vec::with_capacity(objects.iter().map(|o| o.data.len() / 2 + 16).sum());
    out.extend_from_slice(&gix_pack::data::header::encode(
        gix_pack::data::Version::V2,
        count,
    ));
    for o in objects {
        let header = match o.kind {
            Kind::Commit => gix_pack::data::entry::Header::Commit,
            Kind::Tree => gix_pack::data::entry::Header::Tree,
            Kind::Blob => gix_pack::data::entry::Header::Blob,
            Kind::Tag => gix_pack::data::entry::Header::Tag,
        };
        header.write_to(o.data.len() as u64, &mut out)?;
        let mut z = ZlibEncoder::new(&mut out, flate2::Compression::fast());
        z.write_all(o.data)?;
        z.finish()?;
    }
    let mut h = gix_hash::hasher(gix_hash::Kind::Sha1);
    h.update(&out);
    let trailer = h
        .try_finalize()
        .map_err(|e| PackError::Hash(e.to_string()))?;
    out.extend_from_slice(trailer.as_slice());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            object_id(Kind::Blob, b"hello\n").unwrap().to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn pack_header_count_and_trailer() {
        let p = write(&[Object {
            kind: Kind::Blob,
            data: b"hello\n",
        }])
        .unwrap();
        assert_eq!(&p[..4], b"PACK");
        assert_eq!(&p[4..12], &[0, 0, 0, 2, 0, 0, 0, 1]);
        // blob (3) of 6 bytes in one header byte
        assert_eq!(p[12], (3 << 4) | 6);
        let body = &p[..p.len() - 20];
        let mut h = gix_hash::hasher(gix_hash::Kind::Sha1);
        h.update(body);
        assert_eq!(h.try_finalize().unwrap().as_slice(), &p[p.len() - 20..]);
    }
}
