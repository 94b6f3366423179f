//! Repairing a stale pnpm workspace lockfile, exactly as far as a release needs it.
//!
//! Some releases were tagged after a workspace version bump that the lockfile never recorded:
//! a package.json asks for `@novu/shared ^0.9.0` while the lockfile's importer still says
//! `^0.8.0`, for a dependency the lockfile resolves as `link:` into the workspace. pnpm's
//! `--frozen-lockfile` refuses such a lockfile, and installing without it re-resolves every
//! external dependency (which no longer resolves the same, or at all). The repair changes only
//! the specifiers of dependencies resolved as `link:`, to what the importer's package.json
//! says: every external dependency stays pinned as released.
//!
//! Only a lockfile the release map names (`repair_lockfile`) is touched; the edit is made for
//! the setup and undone afterwards, so the worktree stays the tag's tree.
//! Understood format: pnpm lockfile 5.x (pnpm 6 and 7), edited line by line so everything
//! else in the file stays byte for byte as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One reconciled specifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The importer (workspace project) path, `.` for the root.
    pub importer: String,
    pub dependency: String,
    /// The lockfile's specifier before, and the package.json's, written instead.
    pub from: String,
    pub to: String,
}

impl Edit {
    pub fn describe(&self) -> String {
        format!(
            "{}: {} {} -> {}",
            self.importer, self.dependency, self.from, self.to
        )
    }
}

/// The dependency fields pnpm records specifiers for.
const DEPENDENCY_FIELDS: &[&str] = &["dependencies", "devDependencies", "optionalDependencies"];

/// What an importer's package.json asks for: dependency name -> specifier.
pub type Manifest = BTreeMap<String, String>;

/// The lockfile with the stale workspace-link specifiers reconciled, and the edits made.
/// `manifest(importer)` returns that importer's package.json dependencies (None: no
/// package.json, the importer is left alone).
pub fn repair_text(
    text: &str,
    manifest: &mut dyn FnMut(&str) -> Result<Option<Manifest>>,
) -> Result<(String, Vec<Edit>)> {
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("lockfileVersion:"))
        .map(|v| unquote(v.trim()))
        .unwrap_or_default();
    if !version.starts_with('5') {
        return Err(Error::repository(
            format!(
                "cannot repair this lockfile: it is format {:?}, and the repair reads pnpm lockfile format 5.x (pnpm 6 and 7) only",
                version
            ),
            "remove repair_lockfile from this release in the release map (newer lockfiles are not stale this way)",
        ));
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let importers = read_importers(&lines);
    let mut replacements: BTreeMap<usize, String> = BTreeMap::new();
    let mut edits = Vec::new();
    for importer in &importers {
        if importer.links.is_empty() {
            continue;
        }
        let Some(wanted) = manifest(&importer.path)? else {
            continue;
        };
        for name in &importer.links {
            let (Some(want), Some((line, have))) =
                (wanted.get(name), importer.specifiers.get(name))
            else {
                continue;
            };
            if want == have {
                continue;
            }
            let original = lines[*line];
            let newline = if original.ends_with('\n') { "\n" } else { "" };
            let key_end = original
                .find(": ")
                .unwrap_or(original.trim_end().len().saturating_sub(1));
            replacements.insert(
                *line,
                format!("{}: {}{newline}", &original[..key_end], yaml_scalar(want)),
            );
            edits.push(Edit {
                importer: importer.path.clone(),
                dependency: name.clone(),
                from: have.clone(),
                to: want.clone(),
            });
        }
    }
    let mut out = String::with_capacity(text.len());
    for (n, line) in lines.iter().enumerate() {
        match replacements.get(&n) {
            Some(new) => out.push_str(new),
            None => out.push_str(line),
        }
    }
    Ok((out, edits))
}

#[derive(Debug, Default)]
struct Importer {
    path: String,
    /// name -> (line index, specifier)
    specifiers: BTreeMap<String, (usize, String)>,
    /// Dependencies resolved as `link:` (workspace packages).
    links: Vec<String>,
}

/// The `importers:` block, by indentation: importers at 2 spaces, sections at 4, entries at 6.
fn read_importers(lines: &[&str]) -> Vec<Importer> {
    let mut out: Vec<Importer> = Vec::new();
    let mut inside = false;
    let mut section = String::new();
    for (n, raw) in lines.iter().enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            inside = line == "importers:";
            continue;
        }
        if !inside {
            continue;
        }
        let body = line.trim_start();
        match indent {
            2 => {
                if let Some(key) = body.strip_suffix(':') {
                    out.push(Importer {
                        path: unquote(key),
                        ..Importer::default()
                    });
                }
                section.clear();
            }
            4 => section = body.trim_end_matches(':').to_string(),
            6 => {
                let (Some(importer), Some((key, value))) = (out.last_mut(), body.split_once(": "))
                else {
                    continue;
                };
                let (name, value) = (unquote(key), unquote(value.trim()));
                if section == "specifiers" {
                    importer.specifiers.insert(name, (n, value));
                } else if DEPENDENCY_FIELDS.contains(&section.as_str())
                    && value.starts_with("link:")
                {
                    importer.links.push(name);
                }
            }
            _ => {}
        }
    }
    out
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
        t[1..t.len() - 1].replace("''", "'")
    } else if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\\\"", "\"")
    } else {
        t.to_string()
    }
}

/// A YAML scalar for a specifier: plain where YAML allows it, else single-quoted.
fn yaml_scalar(value: &str) -> String {
    let plain = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || "^~=<.".contains(c))
        && value != "~"
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.ends_with(':')
        && !value.contains(['\'', '"', '\n']);
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// An importer's package.json dependencies, read from the worktree.
pub fn read_manifest(worktree: &Path, importer: &str) -> Result<Option<Manifest>> {
    let path = worktree.join(importer).join("package.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::repository(
                format!("cannot read {}: {e}", path.display()),
                "check the worktree (run again with --repair to rebuild it)",
            ))
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::repository(
            format!("cannot parse {}: {e}", path.display()),
            "check the worktree (run again with --repair to rebuild it)",
        )
    })?;
    let mut out = Manifest::new();
    for field in DEPENDENCY_FIELDS {
        if let Some(deps) = json.get(field).and_then(|d| d.as_object()) {
            for (name, spec) in deps {
                if let Some(spec) = spec.as_str() {
                    out.entry(name.clone()).or_insert_with(|| spec.to_string());
                }
            }
        }
    }
    Ok(Some(out))
}

/// A lockfile repaired in place; dropping it (or `restore`) puts the original bytes back, so
/// the worktree is the tag's tree again whatever happened in between.
pub struct RepairedLockfile {
    path: PathBuf,
    original: Option<Vec<u8>>,
    pub edits: Vec<Edit>,
}

impl RepairedLockfile {
    /// Reconcile `worktree/relative` (a lockfile the release map names).
    pub fn apply(worktree: &Path, relative: &str) -> Result<RepairedLockfile> {
        let path = worktree.join(relative);
        let original = std::fs::read(&path).map_err(|e| {
            Error::repository(
                format!("cannot read the lockfile {}: {e}", path.display()),
                "check repair_lockfile in the release map: it must name the tag's lockfile",
            )
        })?;
        let text = String::from_utf8(original.clone()).map_err(|_| {
            Error::repository(
                format!("the lockfile {} is not UTF-8 text", path.display()),
                "check repair_lockfile in the release map",
            )
        })?;
        let (repaired, edits) =
            repair_text(&text, &mut |importer| read_manifest(worktree, importer))?;
        if edits.is_empty() {
            return Ok(RepairedLockfile {
                path,
                original: None,
                edits,
            });
        }
        write_atomically(&path, repaired.as_bytes())?;
        Ok(RepairedLockfile {
            path,
            original: Some(original),
            edits,
        })
    }

    /// Put the released lockfile back.
    pub fn restore(mut self) -> Result<()> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<()> {
        match self.original.take() {
            Some(bytes) => write_atomically(&self.path, &bytes),
            None => Ok(()),
        }
    }
}

impl Drop for RepairedLockfile {
    fn drop(&mut self) {
        if let Err(e) = self.put_back() {
            tracing::warn!("could not restore {}: {e}", self.path.display());
        }
    }
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("upstep-tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::repository(
                format!("cannot write {}: {e}", path.display()),
                "check that the worktree is writable and the disk is not full",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: &str = "lockfileVersion: 5.4

importers:

  .:
    specifiers:
      typescript: 4.6.2
    devDependencies:
      typescript: 4.6.2

  apps/api:
    specifiers:
      '@novu/dal': ^0.8.0
      '@novu/shared': ^0.8.0
      express: ^4.17.1
      left-pad: '*'
    dependencies:
      '@novu/dal': link:../../libs/dal
      '@novu/shared': link:../../libs/shared
      express: 4.17.1
      left-pad: 1.3.0

  libs/dal:
    specifiers:
      '@novu/shared': ^0.8.0
    dependencies:
      '@novu/shared': link:../shared

packages:

  /express/4.17.1:
    resolution: {integrity: sha512-x}
    dependencies:
      '@novu/shared': ^0.8.0
";

    fn manifests() -> BTreeMap<&'static str, Manifest> {
        let m = |pairs: &[(&str, &str)]| -> Manifest {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        BTreeMap::from([
            (".", m(&[("typescript", "4.6.2")])),
            (
                "apps/api",
                // External specifiers changed too: the repair must leave them alone.
                m(&[
                    ("@novu/dal", "^0.9.0"),
                    ("@novu/shared", "workspace:*"),
                    ("express", "^4.18.0"),
                    ("left-pad", "*"),
                ]),
            ),
            ("libs/dal", m(&[("@novu/shared", "^0.9.0")])),
        ])
    }

    #[test]
    fn only_workspace_link_specifiers_are_reconciled() {
        let all = manifests();
        let (text, edits) =
            repair_text(STALE, &mut |importer| Ok(all.get(importer).cloned())).unwrap();
        let described: Vec<String> = edits.iter().map(Edit::describe).collect();
        assert_eq!(
            described,
            [
                "apps/api: @novu/dal ^0.8.0 -> ^0.9.0",
                "apps/api: @novu/shared ^0.8.0 -> workspace:*",
                "libs/dal: @novu/shared ^0.8.0 -> ^0.9.0",
            ]
        );
        let expected = STALE
            .replacen("      '@novu/dal': ^0.8.0", "      '@novu/dal': ^0.9.0", 1)
            .replacen(
                "      '@novu/shared': ^0.8.0\n      express",
                "      '@novu/shared': workspace:*\n      express",
                1,
            )
            .replacen(
                "    specifiers:\n      '@novu/shared': ^0.8.0\n    dependencies:\n      '@novu/shared': link:../shared",
                "    specifiers:\n      '@novu/shared': ^0.9.0\n    dependencies:\n      '@novu/shared': link:../shared",
                1,
            );
        assert_eq!(text, expected);
        // External pins and the packages section are byte for byte as released.
        assert!(text.contains("      express: ^4.17.1\n"));
        assert!(text.ends_with("    dependencies:\n      '@novu/shared': ^0.8.0\n"));
    }

    #[test]
    fn a_fresh_lockfile_is_left_as_it_is() {
        let fresh = STALE.replace("^0.8.0", "^0.9.0");
        let mut all = manifests();
        all.get_mut("apps/api")
            .unwrap()
            .insert("@novu/shared".into(), "^0.9.0".into());
        let (text, edits) =
            repair_text(&fresh, &mut |importer| Ok(all.get(importer).cloned())).unwrap();
        assert!(edits.is_empty());
        assert_eq!(text, fresh);
    }

    #[test]
    fn other_lockfile_formats_are_refused_with_a_fix() {
        let v6 = STALE.replace("lockfileVersion: 5.4", "lockfileVersion: '6.0'");
        let err = repair_text(&v6, &mut |_| Ok(None)).unwrap_err().to_string();
        assert!(err.contains("\"6.0\""), "{err}");
        assert!(err.contains("fix:"), "{err}");
    }

    #[test]
    fn scalars_are_quoted_only_when_yaml_needs_it() {
        assert_eq!(yaml_scalar("^0.9.0"), "^0.9.0");
        assert_eq!(yaml_scalar(">=1 <2"), "'>=1 <2'");
        assert_eq!(yaml_scalar("*"), "'*'");
        assert_eq!(yaml_scalar("workspace:*"), "workspace:*");
        assert_eq!(yaml_scalar("@scope/x"), "'@scope/x'");
        assert_eq!(unquote("'it''s'"), "it's");
    }

    #[test]
    fn apply_writes_the_repair_and_dropping_restores_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("pnpm-lock.yaml"), STALE).unwrap();
        for (importer, deps) in manifests() {
            std::fs::create_dir_all(root.join(importer)).unwrap();
            let json = serde_json::json!({ "name": importer, "dependencies": deps });
            std::fs::write(root.join(importer).join("package.json"), json.to_string()).unwrap();
        }
        let repaired = RepairedLockfile::apply(root, "pnpm-lock.yaml").unwrap();
        assert_eq!(repaired.edits.len(), 3);
        let during = std::fs::read_to_string(root.join("pnpm-lock.yaml")).unwrap();
        assert!(during.contains("'@novu/dal': ^0.9.0"));
        drop(repaired);
        assert_eq!(
            std::fs::read_to_string(root.join("pnpm-lock.yaml")).unwrap(),
            STALE
        );
    }
}
