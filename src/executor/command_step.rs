//! Command steps: a migration run by the project's own migration tool (`run = "command"`),
//! e.g. `["npx", "mikro-orm", "migration:up", "--only", "{name}"]`. The argv is filled in item
//! by item (`{name}`, `{file}`, `{stem}`) and spawned like every script, through
//! `process::spawn_child`: no shell ever sees it, and secrets reach the tool only through the
//! era's env.
//!
//! Before a tag's steps start, the tool must be installed there: a command that would make
//! `npx` download a package at run time (or fail half-way through a tag) is refused with the
//! tag, the tool and the fix.

use std::path::{Path, PathBuf};

use super::command::{relative_to, step_command as script_command, StepCommand};
use crate::error::{Error, Result};
use crate::release_map::tools::fill_command;
use crate::release_map::{Era, Mode, RunKind};

/// The argv of one step: a command step's tool, or (for scripts) the era's `run`.
pub fn step_command(
    worktree: &Path,
    era: &Era,
    mode: &Mode,
    script: &str,
    step_id: &str,
    name: &str,
) -> Result<StepCommand> {
    if mode.run != RunKind::Command {
        return script_command(worktree, era, mode, script, step_id);
    }
    let argv = mode
        .command
        .as_ref()
        .or(era.command.as_ref())
        .ok_or_else(|| {
            Error::Internal(format!(
                "{step_id}: a command step without a command (validation lets none through)"
            ))
        })?;
    Ok(command_in(worktree, era, argv, script, name))
}

/// A filled-in argv, run from the era's `cwd` (`{file}` is the script relative to it).
pub fn command_in(
    worktree: &Path,
    era: &Era,
    argv: &[String],
    script: &str,
    name: &str,
) -> StepCommand {
    let cwd_rel = Path::new(&era.cwd);
    let cwd = worktree.join(cwd_rel);
    let file = relative_to(Path::new(script), cwd_rel)
        .display()
        .to_string();
    let mut filled = fill_command(argv, name, &file).into_iter();
    let first = filled.next().unwrap_or_default();
    StepCommand {
        program: program_path(&cwd, &first),
        args: filled.collect(),
        cwd,
        shim: None,
    }
}

/// A relative program path with a slash is relative to the working directory.
fn program_path(cwd: &Path, first: &str) -> PathBuf {
    if first.contains('/') && !first.starts_with('/') {
        cwd.join(first)
    } else {
        PathBuf::from(first)
    }
}

/// Runners that start a package's binary from the project's `node_modules/.bin` (and, for
/// `npx`, download it from the registry when it is missing there).
const PACKAGE_RUNNERS: &[&str] = &["npx", "pnpx"];

/// The tool a command starts: for `npx [flags] tool ...` the tool, else the program.
fn tool_of(cmd: &StepCommand) -> (String, bool) {
    let program = cmd.program.display().to_string();
    let base = cmd
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let via_runner = PACKAGE_RUNNERS.contains(&base.as_str())
        || (matches!(base.as_str(), "npm" | "pnpm")
            && cmd.args.first().is_some_and(|a| a == "exec"));
    if !via_runner {
        return (program, false);
    }
    let mut args = cmd
        .args
        .iter()
        .skip(usize::from(base == "npm" || base == "pnpm"));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-p" | "--package" | "-c" | "--call" => {
                args.next();
            }
            "--" => return (args.next().cloned().unwrap_or_default(), true),
            a if a.starts_with('-') => {}
            a => return (a.to_string(), true),
        }
    }
    (String::new(), true)
}

/// Why the command cannot start at this worktree (None: its tool is there). `path` is the
/// PATH the step runs with.
pub fn tool_problem(cmd: &StepCommand, worktree: &Path, path: &[PathBuf]) -> Option<String> {
    let (tool, via_runner) = tool_of(cmd);
    if via_runner {
        if tool.is_empty() {
            return Some(format!("`{}` names no tool to run", cmd.program.display()));
        }
        // npm resolves the binary in node_modules/.bin from the working directory upwards.
        let mut dir = Some(cmd.cwd.as_path());
        while let Some(d) = dir.filter(|d| d.starts_with(worktree)) {
            if d.join("node_modules/.bin").join(&tool).exists() {
                return None;
            }
            dir = d.parent();
        }
        return Some(format!(
            "{tool} is not installed: no node_modules/.bin/{tool} in {} or above it (npx would download a package of that name at run time)",
            cmd.cwd.display()
        ));
    }
    if cmd.program.is_absolute() || tool.contains('/') {
        return (!cmd.program.is_file())
            .then(|| format!("{} does not exist", cmd.program.display()));
    }
    let found = path
        .iter()
        .cloned()
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .any(|dir| dir.join(&tool).is_file());
    (!found).then(|| format!("{tool} is not on the PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str], cwd: &Path) -> StepCommand {
        StepCommand {
            program: program_path(cwd, argv[0]),
            args: argv[1..].iter().map(|s| s.to_string()).collect(),
            cwd: cwd.to_path_buf(),
            shim: None,
        }
    }

    #[test]
    fn npx_needs_the_tool_in_node_modules_bin_from_cwd_upwards() {
        let root = tempfile::tempdir().unwrap();
        let app = root.path().join("apps/api");
        std::fs::create_dir_all(&app).unwrap();
        let up = cmd(&["npx", "--no-install", "mikro-orm", "migration:up"], &app);
        assert_eq!(tool_of(&up), ("mikro-orm".to_string(), true));
        let problem = tool_problem(&up, root.path(), &[]).unwrap();
        assert!(problem.contains("mikro-orm is not installed"), "{problem}");
        std::fs::create_dir_all(root.path().join("node_modules/.bin")).unwrap();
        std::fs::write(root.path().join("node_modules/.bin/mikro-orm"), "").unwrap();
        assert_eq!(tool_problem(&up, root.path(), &[]), None);
        let exec = cmd(&["npm", "exec", "--", "migrate-mongo", "up"], &app);
        assert_eq!(tool_of(&exec), ("migrate-mongo".to_string(), true));
        let relative = cmd(&["node_modules/.bin/migrate-mongo", "up"], &app);
        assert!(tool_problem(&relative, root.path(), &[])
            .unwrap()
            .contains("does not exist"));
        let bare = cmd(&["no-such-tool-upstep", "up"], &app);
        assert!(tool_problem(&bare, root.path(), &[])
            .unwrap()
            .contains("not on the PATH"));
    }
}
