//! The shim generator: a step that runs an exported function (`run = "export"` in the map)
//! runs a small file upstep writes beside the script from the era's shim template, which imports
//! the script's module and calls the export. Named `.upstep-shim-<step>.<ext>`, so worktree
//! checks ignore it, and removed after the step.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::release_map::{Era, Mode};

/// Writes the shim of step `step_id` into `cwd` and returns its name (relative to `cwd`, for
/// the argv) and its path (to remove it afterwards). `script_rel` is the script relative to
/// `cwd`.
pub fn write_shim(
    cwd: &Path,
    era: &Era,
    mode: &Mode,
    script: &str,
    script_rel: &Path,
    step_id: &str,
) -> Result<(PathBuf, PathBuf)> {
    let (shim_name, export) = match (&mode.shim, &mode.export) {
        (Some(s), Some(e)) => (s, e),
        _ => {
            return Err(Error::Internal(format!(
                "{step_id}: export mode without shim/export"
            )))
        }
    };
    let template = &era
        .shims
        .get(shim_name)
        .ok_or_else(|| {
            Error::Internal(format!(
                "{step_id}: shim {shim_name} missing from era {}",
                era.name
            ))
        })?
        .template;
    let ext = Path::new(script)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("js");
    let module = script_rel.with_extension("");
    let module = format!("./{}", module.display());
    // The name starts with `.upstep-`: worktree checks ignore upstep's own files.
    let file_name = format!(".upstep-shim-{step_id}.{ext}");
    let body = template
        .replace("{module}", &module)
        .replace("{export}", export);
    let path = cwd.join(&file_name);
    std::fs::write(&path, body).map_err(|e| {
        Error::repository(
            format!("cannot write the shim {}: {e}", path.display()),
            "check that the worktree is writable and the disk is not full",
        )
    })?;
    Ok((PathBuf::from(file_name), path))
}
