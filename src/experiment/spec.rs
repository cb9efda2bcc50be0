//! The bridge between the study file and the method's modules: which artifact and which source
//! edit a study names (the `artifact` and `edit` enums themselves, tagged by `kind` in TOML),
//! their labels, and the PSD options.

use crate::artifact::Artifact;
use crate::edit::SourceEdit;
use crate::error::{Error, Result};
use crate::gradient::GradientTarget;
use crate::spectrum::RadialPsd;

/// An artifact as a study names it, e.g. `{ kind = "grating", ... }` (see [`Artifact`]).
pub type ArtifactSpec = Artifact;
/// A source edit as a study names it, e.g. `{ kind = "whiten" }` (see [`SourceEdit`]).
pub type EditSpec = SourceEdit;

/// The unedited source.
pub fn original_edit() -> EditSpec {
    SourceEdit::Original
}

/// Whether an edit leaves the source as it is.
pub fn is_original(e: &EditSpec) -> bool {
    matches!(e, SourceEdit::Original)
}

/// Short, stable, filename-safe label of an edit.
pub fn edit_label(e: &EditSpec) -> String {
    e.label()
}

/// Short, stable, filename-safe label of an artifact.
pub fn artifact_label(a: &ArtifactSpec) -> String {
    a.label()
}

/// The artifact's kind alone (`grating`, `photon_noise`, ...), for grouping.
pub fn artifact_kind(a: &ArtifactSpec) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

pub fn validate_edit(e: &EditSpec) -> Result<()> {
    e.validate()
}

pub fn validate_artifact(a: &ArtifactSpec) -> Result<()> {
    a.validate()
}

pub fn to_artifact(a: &ArtifactSpec) -> Result<Artifact> {
    Ok(a.clone())
}

pub fn to_edit(e: &EditSpec) -> Result<SourceEdit> {
    Ok(e.clone())
}

/// The `spectrum::RadialPsd` of the study's PSD options (names as in its serde form).
pub fn radial_psd(p: &super::config::PsdSpec) -> Result<RadialPsd> {
    let v = serde_json::json!({
        "window": p.window,
        "scale": p.scale,
        "normalisation": p.normalisation,
        "centre": p.centre,
        "extent": p.extent,
        "absolute": p.absolute,
    });
    serde_json::from_value(v).map_err(|e| Error::param("psd", "options", e.to_string()))
}

/// A gradient target by name: `loss`, `predicted_log_softmax`, `predicted_logit`.
pub fn gradient_target(name: &str) -> Result<GradientTarget> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        Error::param(
            "psd.*_target",
            name,
            "expected loss, predicted_log_softmax or predicted_logit",
        )
    })
}

pub fn validate_psd(p: &super::config::PsdSpec) -> Result<()> {
    radial_psd(p)?;
    gradient_target(&p.pretrained_target)?;
    gradient_target(&p.finetuned_target)?;
    Ok(())
}
