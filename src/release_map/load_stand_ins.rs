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

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::release_map::{parse_map, StandInWhen, StandInWhy};

    const BASE: &str = r#"schema = 1
[project]
name = "demo"
migrations_dir = "migrations"
[eras.plain]
cwd = "."
run = ["node", "{script}"]
[[releases]]
version = "1.0.0"
era = "plain"
node = "20.8.1"
[[releases.downloads]]
dependency = "http2"
url = "https://github.com/node-apn/node-http2/archive/apn-2.1.4.tar.gz"
{stand_ins}
[[migrations]]
id = "a"
title = "A"
introduced_in = "1.0.0"
script = "migrations/a.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "things"
filter = { done = { "$exists" = false } }
"#;

    fn with(stand_ins: &str) -> String {
        BASE.replace("{stand_ins}", stand_ins)
    }

    fn problems(stand_ins: &str) -> Vec<String> {
        match parse_map(&with(stand_ins), "test.toml") {
            Ok(_) => Vec::new(),
            Err(Error::MapInvalid { problems, .. }) => problems
                .into_iter()
                .map(|p| format!("{} | {}", p.message, p.hint))
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }

    const GOOD: &str = r#"
[[releases.stand_ins]]
package = "http2"
original = "node-apn's fork"
stand_in = "3.3.6 from npm"
why = "outside-registry"
when = "when-unreachable"
[[releases.stand_ins.edits]]
text = "tarball: https://github.com/node-apn/node-http2/archive/apn-2.1.4.tar.gz"
with = "tarball: https://registry.npmjs.org/http2/-/http2-3.3.6.tgz"
[[releases.stand_ins]]
package = "@gone/pkg"
original = "1.0.0"
stand_in = "1.0.1 from npm"
why = "gone-from-registry"
when = "always"
file = "sub/pnpm-lock.yaml"
[[releases.stand_ins.edits]]
text = "'@gone/pkg@1.0.0':\n    resolution: x\n"
with = ""
"#;

    #[test]
    fn a_release_declares_stand_ins_with_their_edits() {
        let map = parse_map(&with(GOOD), "test.toml").unwrap();
        let release = &map.releases[0];
        assert_eq!(release.stand_ins.len(), 2);
        let http2 = &release.stand_ins[0];
        assert_eq!(
            (http2.why, http2.when, http2.file.as_str()),
            (
                StandInWhy::OutsideRegistry,
                StandInWhen::WhenUnreachable,
                "pnpm-lock.yaml"
            )
        );
        let gone = &release.stand_ins[1];
        assert_eq!(gone.file, "sub/pnpm-lock.yaml");
        assert_eq!(
            gone.edits[0].text,
            "'@gone/pkg@1.0.0':\n    resolution: x\n"
        );
        assert_eq!(gone.edits[0].with, "");
    }

    #[test]
    fn bad_declarations_are_named_with_their_fix() {
        let cases: &[(&str, &str, &str)] = &[
            ("text = \"tarball: https://github.com/node-apn/node-http2/archive/apn-2.1.4.tar.gz\"", "text = \"\"", "has an edit with an empty text"),
            ("when = \"when-unreachable\"", "when = \"sometimes\"", "has when = \"sometimes\" | write one of [\"always\", \"when-unreachable\"]"),
            ("why = \"outside-registry\"", "why = \"broken\"", "has why = \"broken\""),
            ("package = \"@gone/pkg\"", "package = \"http2\"", "two stand-ins for \"http2\""),
            ("package = \"http2\"", "package = \"other\"", "applies when-unreachable, but the release declares no download of \"other\""),
            ("file = \"sub/pnpm-lock.yaml\"", "file = \"../pnpm-lock.yaml\"", "is not a path inside the repository"),
            ("with = \"tarball: https://registry.npmjs.org/http2/-/http2-3.3.6.tgz\"", "with = \"tarball: https://github.com/node-apn/node-http2/archive/apn-2.1.4.tar.gz\"", "text and replacement are the same"),
        ];
        assert!(problems(GOOD).is_empty(), "{:?}", problems(GOOD));
        for (from, to, wanted) in cases {
            assert!(GOOD.contains(from), "{from}");
            let found = problems(&GOOD.replacen(from, to, 1));
            assert!(
                found.iter().any(|p| p.contains(wanted)),
                "{wanted:?} not among {found:#?}"
            );
        }
        // A stand-in without edits.
        let no_edits = "\n[[releases.stand_ins]]\npackage = \"x\"\noriginal = \"1\"\nstand_in = \"2\"\nwhy = \"gone-from-registry\"\nwhen = \"always\"\n";
        assert!(problems(no_edits)
            .iter()
            .any(|p| p.contains("stand-in \"x\" has no edits")));
    }
}
