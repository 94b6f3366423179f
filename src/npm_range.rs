//! npm's semver range syntax (`package.json` `engines`), which the `semver` crate does not accept
//! as-is: space-separated comparators (`>=13.0.0 <17.0.0`), `||` alternatives, `^`, `~`,
//! x-ranges (`16.x`, `16`, `*`, empty), hyphen ranges (`1.2.3 - 2.3.4`) and partial versions.
//!
//! Ranges are desugared into primitive comparators exactly as node-semver does (`<21` means
//! `<21.0.0-0`, `^0.2.3` means `>=0.2.3 <0.3.0-0`), and prereleases follow npm's rule: a version
//! with a prerelease tag only matches a comparator set that names a prerelease of the same
//! `major.minor.patch`.
//!
//! Why not the `nodejs-semver` crate (tried at 7.0.0 against this file's tests, December 2026;
//! node-semver 7.5.4 as the referee): it disagrees with npm on `>*` (it matches 1.0.0; npm:
//! nothing matches) and on an empty alternative (`1.2.3 || ` does not match 9.9.9 there; npm:
//! an empty set matches anything), and it accepts what npm rejects (`>= >= 1` as `>=1.0.0`,
//! `1.2.3 -` as `1.2.3`). Its desugared text also differs (`<21.0.0` for npm's `<21.0.0-0`).

use std::cmp::Ordering;
use std::fmt;

use semver::{Prerelease, Version};

/// A parsed npm range. `Display` shows the range as written (whitespace normalized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpmRange {
    source: String,
    /// Alternatives (`||`); each is a list of comparators that must all hold (empty = any).
    sets: Vec<Vec<Comparator>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    version: Version,
}

/// A version with optional parts: `None` stands for a missing part or `x`/`X`/`*`.
#[derive(Debug, Clone)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

impl NpmRange {
    pub fn parse(text: &str) -> Result<NpmRange, String> {
        let sets = text
            .split("||")
            .map(|set| parse_set(set).map_err(|e| format!("invalid npm range {text:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let source = text
            .split("||")
            .map(|set| set.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" || ");
        Ok(NpmRange { source, sets })
    }

    pub fn matches(&self, version: &Version) -> bool {
        self.sets.iter().any(|set| set_matches(set, version))
    }

    /// The desugared form, e.g. `>=20.0.0 <21.0.0-0` for `>=20 <21` (`*` for "any").
    pub fn desugared(&self) -> String {
        self.sets
            .iter()
            .map(|set| {
                if set.is_empty() {
                    "*".to_string()
                } else {
                    set.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join(" || ")
    }
}

impl fmt::Display for NpmRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source.trim().is_empty() {
            f.write_str("*")
        } else {
            f.write_str(&self.source)
        }
    }
}

impl std::str::FromStr for NpmRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NpmRange::parse(text)
    }
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "",
        };
        write!(f, "{op}{}", self.version)
    }
}

/// npm ignores build metadata when comparing; `semver::Version`'s `Ord` does not.
fn compare(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch, &a.pre).cmp(&(b.major, b.minor, b.patch, &b.pre))
}

impl Comparator {
    fn holds(&self, version: &Version) -> bool {
        let ordering = compare(version, &self.version);
        match self.op {
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
            Op::Eq => ordering == Ordering::Equal,
        }
    }
}

fn set_matches(set: &[Comparator], version: &Version) -> bool {
    if !set.iter().all(|c| c.holds(version)) {
        return false;
    }
    if version.pre.is_empty() {
        return true;
    }
    // npm: `1.3.0-beta` must not satisfy `^1.2.0` just because it sorts inside the range.
    set.iter().any(|c| {
        !c.version.pre.is_empty()
            && (c.version.major, c.version.minor, c.version.patch)
                == (version.major, version.minor, version.patch)
    })
}

const OPERATORS: [&str; 8] = ["<=", ">=", "~>", "<", ">", "=", "^", "~"];

fn parse_set(text: &str) -> Result<Vec<Comparator>, String> {
    // npm allows a space between an operator and its version (`>= 1.2.3`): glue them back.
    let mut tokens: Vec<String> = Vec::new();
    let mut pending_op: Option<&str> = None;
    for word in text.split_whitespace() {
        if let Some(op) = OPERATORS.iter().find(|op| **op == word) {
            if pending_op.is_some() {
                return Err(format!("two operators in a row before {word:?}"));
            }
            pending_op = Some(op);
            continue;
        }
        tokens.push(match pending_op.take() {
            Some(op) => format!("{op}{word}"),
            None => word.to_string(),
        });
    }
    if let Some(op) = pending_op {
        return Err(format!("operator {op:?} has no version"));
    }

    let mut comparators = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens.get(i + 1).map(String::as_str) == Some("-") {
            let Some(upper) = tokens.get(i + 2) else {
                return Err(format!("hyphen range {:?} - has no upper end", tokens[i]));
            };
            comparators.extend(hyphen(&parse_partial(&tokens[i])?, &parse_partial(upper)?)?);
            i += 3;
        } else {
            comparators.extend(parse_comparator(&tokens[i])?);
            i += 1;
        }
    }
    Ok(comparators)
}

fn parse_comparator(token: &str) -> Result<Vec<Comparator>, String> {
    let op = OPERATORS
        .iter()
        .find(|op| token.starts_with(**op))
        .copied()
        .unwrap_or("");
    let partial = parse_partial(&token[op.len()..])?;
    desugar(op, &partial)
}

fn parse_partial(text: &str) -> Result<Partial, String> {
    let original = text;
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let text = text.strip_prefix('=').unwrap_or(text);
    if text.is_empty() {
        return Err(format!("{original:?} is not a version"));
    }
    // Build metadata never matters to a range.
    let text = text.split_once('+').map_or(text, |(before, _)| before);
    let (numbers, pre) = match text.split_once('-') {
        Some((numbers, pre)) => (numbers, Some(pre)),
        None => (text, None),
    };
    let mut parts = numbers.split('.');
    let mut next_part = || -> Result<Option<u64>, String> {
        match parts.next() {
            None | Some("x" | "X" | "*") => Ok(None),
            Some(number) if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
                number
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{number:?} in {original:?} is too large"))
            }
            Some(other) => Err(format!("{other:?} in {original:?} is not a number or x")),
        }
    };
    let major = next_part()?;
    let minor = next_part()?;
    let patch = next_part()?;
    if parts.next().is_some() {
        return Err(format!("{original:?} has more than three parts"));
    }
    // `1.x.3` means `1.x`: everything after the first wildcard is a wildcard.
    let (minor, patch) = match (major, minor) {
        (None, _) => (None, None),
        (_, None) => (None, None),
        _ => (minor, patch),
    };
    let pre = match pre {
        Some("") => return Err(format!("{original:?} has an empty prerelease")),
        Some(pre) if patch.is_some() => {
            Prerelease::new(pre).map_err(|e| format!("prerelease in {original:?}: {e}"))?
        }
        Some(_) => return Err(format!("{original:?} has a prerelease but no patch number")),
        None => Prerelease::EMPTY,
    };
    Ok(Partial {
        major,
        minor,
        patch,
        pre,
    })
}

fn version(major: u64, minor: u64, patch: u64) -> Version {
    Version::new(major, minor, patch)
}

/// `M.m.p-0`: the lowest version of `M.m.p`, used for exclusive upper bounds as npm does.
fn lowest(major: u64, minor: u64, patch: u64) -> Version {
    let mut v = Version::new(major, minor, patch);
    v.pre = Prerelease::new("0").expect("0 is a valid prerelease");
    v
}

fn bump(n: u64) -> Result<u64, String> {
    n.checked_add(1)
        .ok_or_else(|| format!("version number {n} is too large"))
}

fn cmp(op: Op, version: Version) -> Comparator {
    Comparator { op, version }
}

/// A comparator nothing satisfies (npm's `<0.0.0-0`), for `>*` and `<*`.
fn nothing() -> Vec<Comparator> {
    vec![cmp(Op::Lt, lowest(0, 0, 0))]
}

fn full(p: &Partial, major: u64, minor: u64, patch: u64) -> Version {
    let mut v = version(major, minor, patch);
    v.pre = p.pre.clone();
    v
}

fn desugar(op: &str, p: &Partial) -> Result<Vec<Comparator>, String> {
    use Op::*;
    Ok(match (op, p.major, p.minor, p.patch) {
        // Any version.
        ("" | "=" | ">=" | "<=" | "^" | "~" | "~>", None, _, _) => vec![],
        (">" | "<", None, _, _) => nothing(),

        ("" | "=" | "^" | "~" | "~>", Some(m), None, _) => {
            vec![cmp(Ge, version(m, 0, 0)), cmp(Lt, lowest(bump(m)?, 0, 0))]
        }
        ("" | "=" | "~" | "~>", Some(m), Some(n), None) => {
            vec![cmp(Ge, version(m, n, 0)), cmp(Lt, lowest(m, bump(n)?, 0))]
        }
        ("" | "=", Some(m), Some(n), Some(p2)) => vec![cmp(Eq, full(p, m, n, p2))],

        ("^", Some(m), Some(n), None) => {
            let upper = if m == 0 {
                lowest(0, bump(n)?, 0)
            } else {
                lowest(bump(m)?, 0, 0)
            };
            vec![cmp(Ge, version(m, n, 0)), cmp(Lt, upper)]
        }
        ("^", Some(m), Some(n), Some(p2)) => {
            let upper = if m != 0 {
                lowest(bump(m)?, 0, 0)
            } else if n != 0 {
                lowest(0, bump(n)?, 0)
            } else {
                lowest(0, 0, bump(p2)?)
            };
            vec![cmp(Ge, full(p, m, n, p2)), cmp(Lt, upper)]
        }
        ("~" | "~>", Some(m), Some(n), Some(p2)) => {
            vec![cmp(Ge, full(p, m, n, p2)), cmp(Lt, lowest(m, bump(n)?, 0))]
        }

        (">", Some(m), None, _) => vec![cmp(Ge, version(bump(m)?, 0, 0))],
        (">", Some(m), Some(n), None) => vec![cmp(Ge, version(m, bump(n)?, 0))],
        (">", Some(m), Some(n), Some(p2)) => vec![cmp(Gt, full(p, m, n, p2))],

        (">=", Some(m), n, p2) => match p2 {
            Some(p2) => vec![cmp(Ge, full(p, m, n.unwrap_or(0), p2))],
            None => vec![cmp(Ge, version(m, n.unwrap_or(0), 0))],
        },

        ("<", Some(m), n, p2) => match p2 {
            Some(p2) => vec![cmp(Lt, full(p, m, n.unwrap_or(0), p2))],
            None => vec![cmp(Lt, lowest(m, n.unwrap_or(0), 0))],
        },

        ("<=", Some(m), None, _) => vec![cmp(Lt, lowest(bump(m)?, 0, 0))],
        ("<=", Some(m), Some(n), None) => vec![cmp(Lt, lowest(m, bump(n)?, 0))],
        ("<=", Some(m), Some(n), Some(p2)) => vec![cmp(Le, full(p, m, n, p2))],

        (other, ..) => return Err(format!("unknown operator {other:?}")),
    })
}

/// `A - B`: inclusive on both ends; a partial upper end covers all of its versions.
fn hyphen(from: &Partial, to: &Partial) -> Result<Vec<Comparator>, String> {
    let mut out = Vec::new();
    if from.major.is_some() {
        out.extend(desugar(">=", from)?);
    }
    match (to.major, to.minor, to.patch) {
        (None, _, _) => {}
        (Some(m), None, _) => out.push(cmp(Op::Lt, lowest(bump(m)?, 0, 0))),
        (Some(m), Some(n), None) => out.push(cmp(Op::Lt, lowest(m, bump(n)?, 0))),
        (Some(m), Some(n), Some(p)) => out.push(cmp(Op::Le, full(to, m, n, p))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn matches_like_npm() {
        // (range, version, expected) — cases from node-semver's own test tables where they apply.
        let table: &[(&str, &str, bool)] = &[
            // Novu's engines.
            (">=13.0.0 <17.0.0", "16.15.1", true),
            (">=13.0.0 <17.0.0", "14.18.3", true),
            (">=13.0.0 <17.0.0", "17.0.0", false),
            (">=13.0.0 <17.0.0", "12.22.0", false),
            (">=20 <21", "20.8.1", true),
            (">=20 <21", "20.0.0", true),
            (">=20 <21", "21.0.0", false),
            (">=20 <21", "19.9.9", false),
            (">=20 <21", "21.0.0-pre", false),
            // Exact and x-ranges.
            ("7.5.0", "7.5.0", true),
            ("7.5.0", "7.5.1", false),
            ("=7.5.0", "7.5.0", true),
            ("v7.5.0", "7.5.0", true),
            ("16.x", "16.20.2", true),
            ("16.x", "17.0.0", false),
            ("16", "16.0.0", true),
            ("16", "15.9.9", false),
            ("16.15", "16.15.9", true),
            ("16.15", "16.16.0", false),
            ("16.X.x", "16.1.2", true),
            ("*", "1.2.3", true),
            ("", "0.0.1", true),
            ("x", "99.0.0", true),
            ("*", "1.2.3-beta", false),
            // Caret.
            ("^1.2.3", "1.2.3", true),
            ("^1.2.3", "1.9.9", true),
            ("^1.2.3", "2.0.0", false),
            ("^1.2.3", "1.2.2", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^1.2", "1.9.0", true),
            ("^1.2", "1.1.0", false),
            ("^0.0", "0.0.9", true),
            ("^0.0", "0.1.0", false),
            ("^1.x", "1.0.0", true),
            ("^1.x", "2.0.0", false),
            ("^1.2.3-beta.2", "1.2.3-beta.4", true),
            ("^1.2.3-beta.2", "1.2.4-beta.2", false),
            ("^1.2.3-beta.2", "1.2.3", true),
            // Tilde.
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("~1.2", "1.2.0", true),
            ("~1", "1.9.9", true),
            ("~1", "2.0.0", false),
            ("~> 1.2.3", "1.2.5", true),
            // Primitive operators with partial versions.
            (">1", "2.0.0", true),
            (">1", "1.9.9", false),
            (">1.2", "1.3.0", true),
            (">1.2", "1.2.9", false),
            (">=1", "1.0.0", true),
            ("<1", "0.9.9", true),
            ("<1", "1.0.0-beta", false),
            ("<1.2", "1.1.9", true),
            ("<1.2", "1.2.0", false),
            ("<=1", "1.9.9", true),
            ("<=1", "2.0.0", false),
            ("<=1.2", "1.2.9", true),
            ("<=1.2", "1.3.0", false),
            ("<=1.2.3", "1.2.3", true),
            (">1.2.3", "1.2.3", false),
            (">= 1.2.3", "1.2.3", true),
            (">*", "1.0.0", false),
            ("<*", "1.0.0", false),
            (">=*", "1.0.0", true),
            // Hyphen ranges.
            ("1.2.3 - 2.3.4", "1.2.3", true),
            ("1.2.3 - 2.3.4", "2.3.4", true),
            ("1.2.3 - 2.3.4", "2.3.5", false),
            ("1.2 - 2.3.4", "1.2.0", true),
            ("1.2.3 - 2.3", "2.3.9", true),
            ("1.2.3 - 2.3", "2.4.0", false),
            ("1.2.3 - 2", "2.9.9", true),
            ("1.2.3 - 2", "3.0.0", false),
            ("* - 2", "0.0.1", true),
            // Alternatives.
            ("^14 || ^16", "16.15.1", true),
            ("^14 || ^16", "15.0.0", false),
            ("1.2.3 || ", "9.9.9", true),
            (">=14.18.3 <15 || >=16.15.1 <17", "16.15.1", true),
            (">=14.18.3 <15 || >=16.15.1 <17", "16.15.0", false),
            // Prereleases only inside a set naming one on the same tuple.
            (">=1.2.3-alpha <1.3.0", "1.2.3-beta", true),
            (">=1.2.3-alpha <1.3.0", "1.2.4-beta", false),
            ("1.2.3-beta", "1.2.3-beta", true),
            // Build metadata is ignored.
            ("1.2.3", "1.2.3+build.5", true),
            ("1.2.3+build", "1.2.3", true),
        ];
        for (range, version, expected) in table {
            let parsed = NpmRange::parse(range).unwrap_or_else(|e| panic!("{range:?}: {e}"));
            assert_eq!(
                parsed.matches(&v(version)),
                *expected,
                "{range:?} ({}) vs {version}",
                parsed.desugared()
            );
        }
    }

    #[test]
    fn desugars_like_npm() {
        let table: &[(&str, &str)] = &[
            (">=20 <21", ">=20.0.0 <21.0.0-0"),
            ("^0.2.3", ">=0.2.3 <0.3.0-0"),
            ("~1.2", ">=1.2.0 <1.3.0-0"),
            ("1.2.3 - 2.3", ">=1.2.3 <2.4.0-0"),
            ("16.x", ">=16.0.0 <17.0.0-0"),
            ("7.5.0", "7.5.0"),
            ("*", "*"),
            ("^14 || 16", ">=14.0.0 <15.0.0-0 || >=16.0.0 <17.0.0-0"),
        ];
        for (range, expected) in table {
            assert_eq!(
                NpmRange::parse(range).unwrap().desugared(),
                *expected,
                "{range}"
            );
        }
    }

    #[test]
    fn displays_as_written() {
        assert_eq!(
            NpmRange::parse("  >=13.0.0   <17.0.0 ")
                .unwrap()
                .to_string(),
            ">=13.0.0 <17.0.0"
        );
        assert_eq!(
            NpmRange::parse("^14||^16").unwrap().to_string(),
            "^14 || ^16"
        );
        assert_eq!(NpmRange::parse("").unwrap().to_string(), "*");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "1.2.z",
            ">=",
            ">= >= 1",
            "1.2.3.4",
            "abc",
            "1.2.3 -",
            "^99999999999999999999999",
            "18446744073709551615",
            "^18446744073709551615.0.0",
            "1.2-beta",
            "1.2.3-",
            "v",
            "1..2",
            "=",
            "<=<1",
        ] {
            assert!(NpmRange::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
