//! The bridge between the study file and the method's modules: which artifact and which source
//! edit a study names, their labels, and their validation.

use crate::error::{Error, Result};

/// An artifact as a study names it (the `artifact` module's enum, tagged by `kind`).
pub type ArtifactSpec = serde_json::Value;
/// A source edit as a study names it (the `edit` module's enum, tagged by `kind`).
pub type EditSpec = serde_json::Value;

/// The unedited source.
pub fn original_edit() -> EditSpec {
    serde_json::json!({ "kind": "original" })
}

/// Whether an edit leaves the source as it is.
pub fn is_original(e: &EditSpec) -> bool {
    e.get("kind").and_then(|k| k.as_str()) == Some("original")
}

fn kind_label(v: &serde_json::Value) -> String {
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("unknown");
    let mut parts = vec![kind.to_string()];
    if let Some(map) = v.as_object() {
        for (k, val) in map {
            if k != "kind" {
                parts.push(format!("{k}{val}").replace(['"', '.', ' '], ""));
            }
        }
    }
    parts.join("-")
}

/// Short, stable, filename-safe label of an edit.
pub fn edit_label(e: &EditSpec) -> String {
    kind_label(e)
}

/// Short, stable, filename-safe label of an artifact.
pub fn artifact_label(a: &ArtifactSpec) -> String {
    kind_label(a)
}

/// The artifact's kind alone (`grating`, `photon_noise`, ...), for grouping.
pub fn artifact_kind(a: &ArtifactSpec) -> String {
    a.get("kind").and_then(|k| k.as_str()).unwrap_or("unknown").to_string()
}

pub fn validate_edit(e: &EditSpec) -> Result<()> {
    if e.get("kind").and_then(|k| k.as_str()).is_none() {
        return Err(Error::param("sources.edits", e, "an edit needs a `kind`"));
    }
    Ok(())
}

pub fn validate_artifact(a: &ArtifactSpec) -> Result<()> {
    if a.get("kind").and_then(|k| k.as_str()).is_none() {
        return Err(Error::param("artifacts", a, "an artifact needs a `kind`"));
    }
    Ok(())
}

pub fn validate_psd(_p: &super::config::PsdSpec) -> Result<()> {
    Ok(())
}
