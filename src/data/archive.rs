//! Reading files out of registry packages without unpacking them to disk: wheels (zip), Debian
//! packages (ar holding `data.tar.xz` / `.gz` / plain `.tar`) and gzip-compressed tar files
//! (InVesalius `.inv3` projects).
//!
//! Every function returns [`Error::File`] naming the archive and the member on a missing member,
//! a truncated archive or an unsupported compression; nothing panics on bad input.

use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Which container format a package file is, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A zip file (`.whl`, `.zip`).
    Zip,
    /// A Debian binary package (`.deb`): an ar archive with a compressed `data.tar`.
    Deb,
    /// A (possibly gzip-compressed) tar file (`.tar`, `.tar.gz`, `.tgz`, `.inv3`).
    Tar,
}

impl ArchiveKind {
    /// The kind of `path` by its extension.
    pub fn of(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".whl") || name.ends_with(".zip") {
            Ok(Self::Zip)
        } else if name.ends_with(".deb") {
            Ok(Self::Deb)
        } else if name.ends_with(".tar")
            || name.ends_with(".tar.gz")
            || name.ends_with(".tgz")
            || name.ends_with(".inv3")
        {
            Ok(Self::Tar)
        } else {
            Err(Error::file(
                path,
                "unknown archive type (expected .whl, .zip, .deb, .tar, .tar.gz, .tgz or .inv3)",
            ))
        }
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads the members `inner` (exact paths inside the archive; a leading `./` is ignored) of the
/// archive at `path`, in the order asked. Errors name the first member that is missing.
pub fn read_members(path: &Path, inner: &[&str]) -> Result<Vec<Vec<u8>>> {
    let bytes = read_all(path)?;
    read_members_from_bytes(&bytes, ArchiveKind::of(path)?, path, inner)
}

/// Reads one member of the archive at `path`.
pub fn read_member(path: &Path, inner: &str) -> Result<Vec<u8>> {
    Ok(read_members(path, &[inner])?.remove(0))
}

/// Lists the file members of the archive at `path` (tar directories are left out).
pub fn list_members(path: &Path) -> Result<Vec<String>> {
    let bytes = read_all(path)?;
    match ArchiveKind::of(path)? {
        ArchiveKind::Zip => {
            let zip = open_zip(&bytes, path)?;
            zip.file_names()
                .map(|n| {
                    n.map(|s| s.to_string())
                        .map_err(|e| Error::file(path, format!("zip entry name: {e}")))
                })
                .collect()
        }
        ArchiveKind::Deb => {
            let tar = deb_data_tar(&bytes, path)?;
            tar_names(&tar, path)
        }
        ArchiveKind::Tar => {
            let tar = maybe_gunzip(&bytes, path)?;
            tar_names(&tar, path)
        }
    }
}

/// Like [`read_members`] on bytes already in memory; `path` only names the archive in errors.
pub fn read_members_from_bytes(
    bytes: &[u8],
    kind: ArchiveKind,
    path: &Path,
    inner: &[&str],
) -> Result<Vec<Vec<u8>>> {
    match kind {
        ArchiveKind::Zip => {
            let mut zip = open_zip(bytes, path)?;
            inner
                .iter()
                .map(|name| {
                    let mut f = zip.by_name(name).map_err(|e| {
                        Error::file(path, format!("member `{name}` of the zip archive: {e}"))
                    })?;
                    let mut out = Vec::with_capacity(f.size() as usize);
                    f.read_to_end(&mut out).map_err(|e| {
                        Error::file(
                            path,
                            format!("member `{name}` is corrupt or truncated: {e}"),
                        )
                    })?;
                    Ok(out)
                })
                .collect()
        }
        ArchiveKind::Deb => {
            let tar = deb_data_tar(bytes, path)?;
            tar_members(&tar, path, inner)
        }
        ArchiveKind::Tar => {
            let tar = maybe_gunzip(bytes, path)?;
            tar_members(&tar, path, inner)
        }
    }
}

fn open_zip<'a>(bytes: &'a [u8], path: &Path) -> Result<zip::ZipArchive<Cursor<&'a [u8]>>> {
    zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::file(path, format!("not a readable zip archive: {e}")))
}

/// The uncompressed `data.tar` of a Debian package.
pub fn deb_data_tar(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut ar = ar::Archive::new(Cursor::new(bytes));
    let mut seen = Vec::new();
    while let Some(entry) = ar.next_entry() {
        let mut entry =
            entry.map_err(|e| Error::file(path, format!("not a readable ar archive: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).to_string();
        if !name.starts_with("data.tar") {
            seen.push(name);
            continue;
        }
        let mut raw = Vec::new();
        entry
            .read_to_end(&mut raw)
            .map_err(|e| Error::file(path, format!("ar member `{name}` is truncated: {e}")))?;
        return match name.as_str() {
            "data.tar" => Ok(raw),
            "data.tar.gz" => gunzip(&raw, path, &name),
            "data.tar.xz" => {
                let mut out = Vec::new();
                lzma_rs::xz_decompress(&mut BufReader::new(Cursor::new(&raw)), &mut out).map_err(
                    |e| {
                        Error::file(
                            path,
                            format!("ar member `{name}`: corrupt xz stream: {e:?}"),
                        )
                    },
                )?;
                Ok(out)
            }
            other => Err(Error::file(
                path,
                format!("ar member `{other}`: unsupported compression (supported: none, gz, xz)"),
            )),
        };
    }
    Err(Error::file(
        path,
        format!(
            "no data.tar member in the Debian package (members: {})",
            seen.join(", ")
        ),
    ))
}

fn gunzip(raw: &[u8], path: &Path, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::file(
                path,
                format!("{what}: corrupt or truncated gzip stream: {e}"),
            )
        })?;
    Ok(out)
}

/// Gunzips `bytes` if they start with the gzip magic, else returns them unchanged.
pub fn maybe_gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        gunzip(bytes, path, "gzip data")
    } else {
        Ok(bytes.to_vec())
    }
}

fn normalise(name: &str) -> &str {
    name.trim_start_matches("./").trim_start_matches('/')
}

fn tar_names(tar: &[u8], path: &Path) -> Result<Vec<String>> {
    let mut archive = tar::Archive::new(Cursor::new(tar));
    let entries = archive
        .entries()
        .map_err(|e| Error::file(path, format!("not a readable tar archive: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(path, format!("corrupt tar entry: {e}")))?;
        if entry.header().entry_type().is_file() {
            let p = entry
                .path()
                .map_err(|e| Error::file(path, format!("bad tar entry name: {e}")))?;
            names.push(normalise(&p.to_string_lossy()).to_string());
        }
    }
    Ok(names)
}

/// Members of a tar archive by exact name, or by the file-name suffix `*/name` when `inner`
/// starts with `*/` (an `.inv3` project keeps its files under a random temporary folder).
fn tar_members(tar: &[u8], path: &Path, inner: &[&str]) -> Result<Vec<Vec<u8>>> {
    let mut found: Vec<Option<Vec<u8>>> = vec![None; inner.len()];
    let mut archive = tar::Archive::new(Cursor::new(tar));
    let entries = archive
        .entries()
        .map_err(|e| Error::file(path, format!("not a readable tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::file(path, format!("corrupt tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = {
            let p = entry
                .path()
                .map_err(|e| Error::file(path, format!("bad tar entry name: {e}")))?;
            normalise(&p.to_string_lossy()).to_string()
        };
        for (slot, want) in found.iter_mut().zip(inner) {
            let hit = match want.strip_prefix("*/") {
                Some(suffix) => name == suffix || name.ends_with(&format!("/{suffix}")),
                None => name == normalise(want),
            };
            if hit && slot.is_none() {
                let mut out = Vec::new();
                entry.read_to_end(&mut out).map_err(|e| {
                    Error::file(path, format!("tar member `{name}` is truncated: {e}"))
                })?;
                *slot = Some(out);
                break;
            }
        }
    }
    found
        .into_iter()
        .zip(inner)
        .map(|(f, want)| {
            f.ok_or_else(|| Error::file(path, format!("member `{want}` not found in the archive")))
        })
        .collect()
}
