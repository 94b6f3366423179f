//! Validation of a release's `stand_ins` (see `src/stand_ins.rs` for how they are applied).
//! Called from `load.rs`.

use semver::Version;

use super::load::{repo_relative, Problems};
use super::model::{Download, StandIn, StandInWhen, StandInWhy, TextEdit};
use super::schema::RawStandIn;

/// The lockfile a stand-in edits when it names none.
pub const DEFAULT_LOCKFILE: &str = "pnpm-lock.yaml";

pub(super) fn build_stand_ins(
    sink: &mut Problems,
    version: &Version,
    downloads: &[Download],
    raw: &[RawStandIn],
) -> Vec<StandIn> {
    let mut out: Vec<StandIn> = Vec::new();
    for s in raw {
        let package = s.package.get_ref().trim().to_string();
        if package.is_empty() {
            sink.at(
                &s.package,
                format!("release {version}: a stand-in has an empty package"),
                "name the package as the lockfile names it, e.g. \"@team-plain/typescript-sdk\"",
            );
        }
        if out.iter().any(|o| o.package == package) {
            sink.at(
                &s.package,
                format!("release {version}: two stand-ins for {package:?}"),
                "declare one stand-in per package and release, with every edit it needs",
            );
        }
        let why = StandInWhy::parse(s.why.get_ref());
        if why.is_none() {
            sink.at(
                &s.why,
                format!(
                    "release {version}: stand-in {package:?} has why = {:?}",
                    s.why.get_ref()
                ),
                &format!("write one of {:?}", StandInWhy::NAMES),
            );
        }
        let when = StandInWhen::parse(s.when.get_ref());
        if when.is_none() {
            sink.at(
                &s.when,
                format!(
                    "release {version}: stand-in {package:?} has when = {:?}",
                    s.when.get_ref()
                ),
                &format!(
                    "write one of {:?}: \"always\" when the original is gone, \"when-unreachable\" when only the host of the release's download of it may be out of reach",
                    StandInWhen::NAMES
                ),
            );
        }
        if when == Some(StandInWhen::WhenUnreachable)
            && !downloads.iter().any(|d| d.dependency == package)
        {
            sink.at(
                &s.when,
                format!(
                    "release {version}: stand-in {package:?} applies when-unreachable, but the release declares no download of {package:?} whose host it would stand in for"
                ),
                "declare the [[releases.downloads]] entry with dependency = the same package, or use when = \"always\"",
            );
        }
        let file = match &s.file {
            Some(f) if !repo_relative(f.get_ref()) => {
                sink.at(
                    f,
                    format!(
                        "release {version}: stand-in {package:?} names file {:?}, which is not a path inside the repository",
                        f.get_ref()
                    ),
                    "give the lockfile's path from the repository root, e.g. \"pnpm-lock.yaml\"",
                );
                f.get_ref().clone()
            }
            Some(f) => f.get_ref().clone(),
            None => DEFAULT_LOCKFILE.to_string(),
        };
        if s.edits.is_empty() {
            sink.at(
                &s.package,
                format!("release {version}: stand-in {package:?} has no edits"),
                "add [[releases.stand_ins.edits]] entries: the exact lockfile text (`text`) and what replaces it (`with`)",
            );
        }
        let mut edits = Vec::new();
        for e in &s.edits {
            let text = e.text.get_ref();
            if text.is_empty() {
                sink.at(
                    &e.text,
                    format!(
                        "release {version}: stand-in {package:?} has an edit with an empty text"
                    ),
                    "give the exact lockfile text to replace (it may span lines: \\n)",
                );
            } else if *text == e.with {
                sink.at(
                    &e.text,
                    format!("release {version}: stand-in {package:?} has an edit whose text and replacement are the same"),
                    "remove that edit, or write the replacement in `with`",
                );
            }
            edits.push(TextEdit {
                text: text.clone(),
                with: e.with.clone(),
            });
        }
        out.push(StandIn {
            package,
            original: s.original.clone(),
            stand_in: s.stand_in.clone(),
            why: why.unwrap_or(StandInWhy::GoneFromRegistry),
            when: when.unwrap_or(StandInWhen::Always),
            file,
            notes: s.notes.clone(),
            edits,
        });
    }
    out
}
