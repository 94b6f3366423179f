//! Secrets in repository URLs: a token canary in `--repo` (and in `UPSTEP_REPO`, a profile's
//! `repo` and `repo_env`) goes through every command that reads a repository location, against
//! a repository served over git's smart HTTP that refuses anyone without the token. The canary
//! must appear nowhere: stdout, stderr (logs, JSON logs at trace level), files under the state,
//! cache, working and home folders (the journal mirror, the cached clone's `.git/config`, its
//! reflogs, a user's credential store), the journal in MongoDB, and the argv of every git
//! process (a `git` wrapper first on PATH records upstep's calls; `GIT_TRACE` records git's
//! own children, such as `git-remote-http`, which gets the URL in its argv).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::Document;

use crate::support::{mongo, redis};
use crate::upgrade::{text, Env};

/// The token: the server accepts it as the user name (`http://TOKEN@host`, empty password) or
/// as the password of `oauth2` (`http://oauth2:TOKEN@host`).
const CANARY: &str = "CanaryTok3n-5d1e90";
/// A token the server refuses (the clone fails: its error must not show it either).
const WRONG_CANARY: &str = "WrongCanaryTok-77a1c";

// ---------------------------------------------------------------- the git server

/// Requests the server answered, by whether they carried the token.
#[derive(Default)]
struct Stats {
    authorized: AtomicUsize,
    refused: AtomicUsize,
}

/// A bare repository served by `git http-backend` (as CGI) on loopback, behind Basic auth.
struct GitHttpServer {
    port: u16,
    root: tempfile::TempDir,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl GitHttpServer {
    /// Serves a bare clone of `source` as `/repo.git`.
    fn start(source: &Path) -> GitHttpServer {
        let root = tempfile::tempdir().unwrap();
        let status = StdCommand::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(source)
            .arg(root.path().join("repo.git"))
            .status()
            .unwrap();
        assert!(status.success(), "cannot make the served bare repository");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (project_root, thread_stats, thread_stop) =
            (root.path().to_path_buf(), stats.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (project_root, stats) = (project_root.clone(), thread_stats.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &project_root, &stats) {
                        eprintln!("git http test server: {e}");
                    }
                });
            }
        });
        GitHttpServer {
            port,
            root,
            stats,
            stop,
        }
    }

    fn url(&self, userinfo: Option<&str>, name: &str) -> String {
        match userinfo {
            Some(userinfo) => format!("http://{userinfo}@127.0.0.1:{}/{name}", self.port),
            None => format!("http://127.0.0.1:{}/{name}", self.port),
        }
    }

    fn authorized(&self) -> usize {
        self.stats.authorized.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.stats.refused.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        let _ = &self.root;
    }
}

/// One request per connection (`Connection: close`), answered by `git http-backend`.
fn serve(conn: TcpStream, project_root: &Path, stats: &Stats) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Ok(()),
    };
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let body = read_body(&mut reader, &headers)?;
    let mut out = conn;

    let accepted = [format!("{CANARY}:"), format!("oauth2:{CANARY}")]
        .iter()
        .any(|pair| headers.get("authorization") == Some(&format!("Basic {}", base64(pair))));
    if !accepted {
        stats.refused.fetch_add(1, Ordering::SeqCst);
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"canary\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    stats.authorized.fetch_add(1, Ordering::SeqCst);

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = StdCommand::new("git");
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "canary")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(value) = headers.get(header) {
            cgi.env(var, value);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();

    let raw = output.stdout;
    let (head, content) = match find(&raw, b"\r\n\r\n") {
        Some(at) => (&raw[..at], &raw[at + 4..]),
        None => match find(&raw, b"\n\n") {
            Some(at) => (&raw[..at], &raw[at + 2..]),
            None => (&raw[..0], &raw[..]),
        },
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in String::from_utf8_lossy(head).lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => {
                response_headers.push_str(line.trim_end());
                response_headers.push_str("\r\n");
            }
            None => {}
        }
    }
    write!(
        out,
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    )?;
    out.write_all(content)?;
    out.flush()
}

fn read_body(
    reader: &mut BufReader<TcpStream>,
    headers: &HashMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = headers.get("content-length") {
        body.resize(length.parse().unwrap_or(0), 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------- the canary run

/// Where the runs happen, and where what they leave behind is searched.
struct Scene {
    env: Env,
    server: GitHttpServer,
    /// HOME, with a global git config whose `store` helper writes into it.
    home: tempfile::TempDir,
    /// Where the git wrapper and GIT_TRACE write the argv of every git process.
    argv_dir: tempfile::TempDir,
    wrapper_dir: tempfile::TempDir,
    /// A profile whose `repo` holds the token (the operator's own file: not searched).
    config_literal: PathBuf,
    /// A profile whose `repo_env` names the variable holding it.
    config_env: PathBuf,
    _configs: tempfile::TempDir,
}

/// A command to run: its label, arguments, extra environment and the exit codes it may end with.
type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>, &'a [i32]);

/// One command run with the canary, and what it printed.
struct Run {
    label: String,
    output: Output,
    /// The argv of every git process this run started (upstep's, then git's own children).
    argv_log: PathBuf,
    trace_log: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let env = Env::new("secrets_url");
        let server = GitHttpServer::start(env.project.repo_path());
        let home = tempfile::tempdir().unwrap();
        let global_config = home.path().join(".gitconfig");
        std::fs::write(
            &global_config,
            format!(
                "[credential]\n\thelper = store --file {}\n",
                home.path().join("git-credentials").display()
            ),
        )
        .unwrap();
        let argv_dir = tempfile::tempdir().unwrap();
        let wrapper_dir = tempfile::tempdir().unwrap();
        let real_git = which("git");
        let wrapper = wrapper_dir.path().join("git");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$UPSTEP_TEST_ARGV_LOG\"\nexec {} \"$@\"\n",
                real_git.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

        let configs = tempfile::tempdir().unwrap();
        let config_literal = configs.path().join("literal.toml");
        std::fs::write(
            &config_literal,
            format!(
                "default_profile = \"prod\"\n[profiles.prod]\nrepo = \"{}\"\nmap = \"{}\"\n",
                server.url(Some(CANARY), "repo.git"),
                env.project.map_path.display()
            ),
        )
        .unwrap();
        let config_env = configs.path().join("env.toml");
        std::fs::write(
            &config_env,
            format!(
                "default_profile = \"prod\"\n[profiles.prod]\nrepo_env = \"NOVU_REPO_URL\"\nmap = \"{}\"\n",
                env.project.map_path.display()
            ),
        )
        .unwrap();
        Scene {
            env,
            server,
            home,
            argv_dir,
            wrapper_dir,
            config_literal,
            config_env,
            _configs: configs,
        }
    }

    /// Runs upstep with `args` and `vars`, in a clean environment pointing at the scene.
    fn run(&self, label: &str, args: &[&str], vars: &[(&str, &str)]) -> Run {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let argv_log = self.argv_dir.path().join(format!("{n:02}-argv.log"));
        let trace_log = self.argv_dir.path().join(format!("{n:02}-git-trace.log"));
        let mut cmd = self.env.command(args);
        let path = format!(
            "{}:{}",
            self.wrapper_dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("GIT_CONFIG_GLOBAL", self.home.path().join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TRACE", &trace_log)
            .env("UPSTEP_TEST_ARGV_LOG", &argv_log)
            .env_remove("UPSTEP_REPO")
            .env_remove("UPSTEP_MAP")
            .env_remove("UPSTEP_PROFILE")
            .env_remove("UPSTEP_REDIS_URL")
            .env_remove("NOVU_REPO_URL")
            .env("STORE_ENCRYPTION_KEY", "k".repeat(32))
            .timeout(Duration::from_secs(240));
        for (name, value) in vars {
            cmd.env(name, value);
        }
        Run {
            label: label.to_string(),
            output: cmd.output().unwrap(),
            argv_log,
            trace_log,
        }
    }

    /// Every collection of the test database, as text.
    fn database_text(&self) -> String {
        let (uri, db) = (self.env.uri.clone(), self.env.db.clone());
        crate::support::block_on(async move {
            use futures_util::TryStreamExt;
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            let database = client.database(&db);
            let mut all = String::new();
            for name in database.list_collection_names().await.unwrap() {
                let docs: Vec<Document> = database
                    .collection::<Document>(&name)
                    .find(bson::doc! {})
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                for doc in docs {
                    all.push_str(&format!("{name}: {doc}\n"));
                }
            }
            all
        })
    }
}

fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains_secret(bytes: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(bytes);
    [CANARY, WRONG_CANARY]
        .into_iter()
        .find(|canary| text.contains(canary))
}

/// The canary in every command that accepts a repository location; see the module comment.
#[test]
fn a_token_in_the_repository_url_never_leaks() {
    let scene = Scene::new();
    let map = scene.env.project.map_path.display().to_string();
    let token_url = scene.server.url(Some(CANARY), "repo.git");
    let pair_url = scene
        .server
        .url(Some(&format!("oauth2:{CANARY}")), "repo.git");
    let bare_url = scene.server.url(None, "repo.git");
    let wrong_url = scene.server.url(Some(WRONG_CANARY), "other.git");
    let refused_url = format!("http://{CANARY}@127.0.0.1:1/refused.git");
    let mongo_uri = scene.env.uri.clone();
    let redis_url = redis().url.clone();
    let literal = scene.config_literal.display().to_string();
    let from_env = scene.config_env.display().to_string();
    let _ = mongo();

    let mut runs = Vec::new();
    let mut expect = |run: Run, codes: &[i32]| {
        let code = run.output.status.code().unwrap_or(-1);
        let ok = codes.contains(&code);
        runs.push((run, ok, codes.to_vec()));
    };
    let connect = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![
            "--mongo-uri".to_string(),
            mongo_uri.clone(),
            "--redis-url".to_string(),
            redis_url.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let with = |head: &[&str], tail: &[String]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(tail.iter().cloned())
            .collect()
    };

    // The first clone: user and password in the URL, with logs at trace level.
    let before = scene.server.authorized();
    let first = scene.run(
        "plan --repo http://oauth2:TOKEN@... -vv",
        &[
            "-vv", "plan", "--from", "1.0.0", "--map", &map, "--repo", &pair_url,
        ],
        &[],
    );
    assert!(
        scene.server.authorized() > before,
        "the clone must authenticate with the URL's credentials\n{}",
        text(&first.output)
    );
    assert!(
        String::from_utf8_lossy(&first.output.stderr).contains("on the command line"),
        "a token given as a flag is warned about\n{}",
        text(&first.output)
    );
    expect(first, &[0]);
    // A token alone: the fetch of the cached clone authenticates with it.
    let before = scene.server.authorized();
    expect(
        scene.run(
            "plan --repo http://TOKEN@... --json (json logs, trace)",
            &[
                "--log-format",
                "json",
                "-vv",
                "plan",
                "--json",
                "--from",
                "1.0.0",
                "--map",
                &map,
                "--repo",
                &token_url,
            ],
            &[],
        ),
        &[0],
    );
    let fetch_authenticated = scene.server.authorized() > before;

    for (label, args, vars, codes) in [
        (
            "config show --repo",
            vec!["config", "show", "--repo", &token_url],
            vec![],
            &[0][..],
        ),
        (
            "config show --repo --json",
            vec!["config", "show", "--json", "--repo", &token_url],
            vec![],
            &[0],
        ),
        (
            "config show (UPSTEP_REPO)",
            vec!["config", "show"],
            vec![("UPSTEP_REPO", token_url.as_str())],
            &[0],
        ),
        (
            "config show (profile repo)",
            vec!["config", "show", "--json", "--config", &literal],
            vec![],
            &[0],
        ),
        (
            "config show (profile repo_env)",
            vec!["config", "show", "--config", &from_env],
            vec![("NOVU_REPO_URL", token_url.as_str())],
            &[0],
        ),
        (
            "upgrade --help (UPSTEP_REPO)",
            vec!["upgrade", "--help"],
            vec![("UPSTEP_REPO", token_url.as_str())],
            &[0],
        ),
        (
            "plan (UPSTEP_REPO)",
            vec!["plan", "--from", "1.0.0", "--map", &map, "--to", "1.2.0"],
            vec![("UPSTEP_REPO", token_url.as_str())],
            &[0],
        ),
        (
            "upgrade --plan --repo",
            vec![
                "upgrade", "--plan", "--from", "1.0.0", "--map", &map, "--repo", &token_url,
            ],
            vec![],
            &[0],
        ),
        (
            "map check --repo",
            vec!["map", "check", "--map", &map, "--repo", &token_url],
            vec![],
            &[0, 3],
        ),
        (
            "map check --repo --json",
            vec!["map", "check", "--json", "--map", &map, "--repo", &pair_url],
            vec![],
            &[0, 3],
        ),
        (
            "map generate --repo",
            vec!["map", "generate", "--map", &map, "--repo", &token_url],
            vec![],
            &[0],
        ),
    ] {
        expect(scene.run(label, &args, &vars), codes);
    }

    // Commands that also read the database.
    let db_runs: Vec<Case> = vec![
        (
            "plan --detect --repo",
            with(
                &["plan", "--detect", "--map", &map, "--repo", &token_url],
                &connect(&[]),
            ),
            vec![],
            &[0],
        ),
        (
            "plan --detect --json (UPSTEP_REPO)",
            with(
                &["plan", "--detect", "--json", "--map", &map],
                &connect(&[]),
            ),
            vec![("UPSTEP_REPO", token_url.as_str())],
            &[0],
        ),
        (
            "detect --repo",
            with(
                &["detect", "--map", &map, "--repo", &token_url],
                &connect(&[]),
            ),
            vec![],
            &[0, 9],
        ),
        (
            "detect --json (profile repo)",
            with(&["detect", "--json", "--config", &literal], &connect(&[])),
            vec![],
            &[0, 9],
        ),
        (
            "upgrade --dry-run --repo",
            with(
                &["upgrade", "--dry-run", "--map", &map, "--repo", &token_url],
                &connect(&["--no-backup"]),
            ),
            vec![],
            &[0],
        ),
        (
            "upgrade --repo (runs a step; json logs at trace level)",
            with(
                &[
                    "--log-format",
                    "json",
                    "-vv",
                    "upgrade",
                    "--map",
                    &map,
                    "--repo",
                    &token_url,
                    "--to",
                    "1.0.0",
                    "--yes",
                ],
                &connect(&["--no-backup"]),
            ),
            vec![],
            &[0],
        ),
        (
            "upgrade --json (profile repo, runs a step)",
            with(
                &[
                    "upgrade", "--json", "--config", &literal, "--to", "1.1.0", "--yes",
                ],
                &connect(&["--no-backup"]),
            ),
            vec![],
            &[0],
        ),
        (
            "upgrade --dry-run (profile repo_env)",
            with(
                &["upgrade", "--dry-run", "--config", &from_env],
                &connect(&["--no-backup"]),
            ),
            vec![("NOVU_REPO_URL", token_url.as_str())],
            &[0],
        ),
        (
            "status (profile repo)",
            with(&["status", "--config", &literal], &connect(&[])),
            vec![],
            &[0, 9],
        ),
    ];
    for (label, args, vars, codes) in db_runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect(scene.run(label, &args, &vars), codes);
    }

    // Failures: the clone is refused (wrong token), or nothing listens.
    let wrong = scene.run(
        "plan --repo http://WRONG@... (refused)",
        &[
            "plan", "--from", "1.0.0", "--map", &map, "--repo", &wrong_url,
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&wrong.output.stderr).contains("cannot clone"),
        "{}",
        text(&wrong.output)
    );
    expect(wrong, &[4]);
    expect(
        scene.run(
            "plan --repo (nothing listens)",
            &[
                "plan",
                "--from",
                "1.0.0",
                "--map",
                &map,
                "--repo",
                &refused_url,
            ],
            &[],
        ),
        &[4],
    );
    // Without the token, the cached clone cannot authenticate: its `.git/config` holds none.
    let (authorized, refused) = (scene.server.authorized(), scene.server.refused());
    let tokenless = scene.run(
        "plan --repo http://... (no token: the fetch is refused, the cache is used)",
        &[
            "plan", "--from", "1.0.0", "--map", &map, "--repo", &bare_url,
        ],
        &[],
    );
    let tokenless_stderr = String::from_utf8_lossy(&tokenless.output.stderr).into_owned();
    let cache_kept_no_token = scene.server.authorized() == authorized
        && scene.server.refused() > refused
        && tokenless_stderr.contains("cannot fetch");
    expect(tokenless, &[0]);

    // ---- where the canary is looked for
    let mut leaks: Vec<String> = Vec::new();
    let mut wrong_codes: Vec<String> = Vec::new();
    let masked = format!("****@127.0.0.1:{}/repo.git", scene.server.port);
    for (run, ok, codes) in &runs {
        // The location is shown, masked: the run read it from where the label says.
        let shown = String::from_utf8_lossy(&run.output.stdout).contains(&masked);
        if (run.label.starts_with("config show") || run.label.contains("TOKEN@")) && !shown {
            wrong_codes.push(format!("{}: no {masked}\n{}", run.label, text(&run.output)));
        }
        let argv = std::fs::read(&run.argv_log).unwrap_or_default();
        let trace = std::fs::read(&run.trace_log).unwrap_or_default();
        for (stream, bytes) in [
            ("stdout", &run.output.stdout),
            ("stderr", &run.output.stderr),
            ("git's argv (wrapper on PATH)", &argv),
            ("git's children's argv (GIT_TRACE)", &trace),
        ] {
            if let Some(canary) = contains_secret(bytes) {
                leaks.push(format!("{}: {canary} in {stream}", run.label));
            }
        }
        if !ok {
            wrong_codes.push(format!(
                "{} (expected {codes:?})\n{}",
                run.label,
                text(&run.output)
            ));
        }
    }
    for (place, dir) in [
        ("state dir", scene.env.state.path()),
        ("cache dir (clone, worktrees)", scene.env.cache.path()),
        ("home (credential store)", scene.home.path()),
    ] {
        for (path, bytes) in files_under(dir) {
            if let Some(canary) = contains_secret(&bytes) {
                leaks.push(format!("{place}: {canary} in {}", path.display()));
            }
        }
    }
    if let Some(canary) = contains_secret(scene.database_text().as_bytes()) {
        leaks.push(format!("journal/database: {canary}"));
    }
    let cached_config = files_under(&scene.env.cache.path().join("repos"))
        .into_iter()
        .filter(|(path, _)| path.ends_with(".git/config") || path.ends_with("config"))
        .count();

    eprintln!(
        "canary: {} commands checked, {} leaks found",
        runs.len(),
        leaks.len()
    );
    for leak in &leaks {
        eprintln!("  leak: {leak}");
    }
    assert!(leaks.is_empty(), "the token leaked:\n{}", leaks.join("\n"));
    assert!(
        wrong_codes.is_empty(),
        "unexpected exit codes:\n{}",
        wrong_codes.join("\n")
    );
    assert!(cached_config > 0, "the cached clone was searched");
    // The upgrades really ran their steps from the cached clone.
    assert_eq!(scene.env.status_of("exits"), "succeeded");
    assert_eq!(scene.env.status_of("hangs"), "succeeded");
    assert!(
        fetch_authenticated,
        "a fetch of the cached clone must authenticate with the token given again"
    );
    assert!(
        cache_kept_no_token,
        "without the token the fetch must be refused (the cache keeps no credentials)\n{tokenless_stderr}"
    );
    // The argv record really covers git: upstep's clone and git's own children are in it.
    let (first_argv, first_trace) = (&runs[0].0.argv_log, &runs[0].0.trace_log);
    let trace = std::fs::read_to_string(first_trace).unwrap();
    assert!(
        trace.contains("remote-http"),
        "GIT_TRACE recorded git's helpers"
    );
    let argv = std::fs::read_to_string(first_argv).unwrap();
    assert!(argv.contains("clone --no-checkout"), "{argv}");
    assert!(
        argv.contains(&format!("127.0.0.1:{}/repo.git", scene.server.port)),
        "{argv}"
    );
}

/// A clone cached by an older upstep holds the token in `.git/config` and its reflogs: the
/// next run points `origin` at the credential-free URL and drops the reflogs.
#[test]
fn a_cache_written_with_a_token_is_scrubbed() {
    let scene = Scene::new();
    let map = scene.env.project.map_path.display().to_string();
    let token_url = scene.server.url(Some(CANARY), "repo.git");
    let pair_url = scene
        .server
        .url(Some(&format!("oauth2:{CANARY}")), "repo.git");
    // What an older upstep did: clone with the credentials in git's argv.
    let cache_repo = scene
        .env
        .cache
        .path()
        .join("repos")
        .join(format!("127.0.0.1-{}-repo", scene.server.port));
    std::fs::create_dir_all(cache_repo.parent().unwrap()).unwrap();
    let status = StdCommand::new("git")
        .args(["clone", "--quiet", "--no-checkout", &pair_url])
        .arg(&cache_repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(files_under(&cache_repo)
        .iter()
        .any(|(_, bytes)| contains_secret(bytes).is_some()));

    let run = scene.run(
        "plan",
        &[
            "plan", "--from", "1.0.0", "--map", &map, "--repo", &token_url,
        ],
        &[],
    );
    assert!(run.output.status.success(), "{}", text(&run.output));
    let leaks: Vec<String> = files_under(&cache_repo)
        .into_iter()
        .filter(|(_, bytes)| contains_secret(bytes).is_some())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    let config = std::fs::read_to_string(cache_repo.join(".git/config")).unwrap();
    assert!(
        config.contains(&scene.server.url(None, "repo.git")),
        "{config}"
    );
}
