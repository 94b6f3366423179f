//! The test MongoDB server (SecantusDB; see docs in /work/shared/test-server.md for where it
//! differs from mongod).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;

use super::process::{block_on, free_port, fresh_dir, wait_for_tcp, ServerProcess};
use super::tools::mongod_binary;

/// A user and password (test credentials only).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

pub struct MongoServer {
    /// `mongodb://127.0.0.1:PORT` (no credentials, no database).
    pub uri: String,
    pub port: u16,
    /// The root user of a server started `--auth`; `None` for the shared server.
    pub admin: Option<Credentials>,
    pub process: ServerProcess,
}

impl std::fmt::Debug for MongoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoServer")
            .field("uri", &self.uri)
            .field("pid", &self.process.pid)
            .finish()
    }
}

/// The shared server, started on first use and stopped when the test process ends.
pub fn mongo() -> &'static MongoServer {
    // The error is kept too, so after one failed start every test fails at once with the reason.
    static SHARED: OnceLock<Result<MongoServer, String>> = OnceLock::new();
    match SHARED.get_or_init(|| start(Mode::Shared)) {
        Ok(server) => server,
        Err(reason) => panic!("the shared test MongoDB did not start: {reason}"),
    }
}

/// A private server started with `--auth` and a root user (`server.admin`); stopped on Drop.
pub fn start_mongo_with_auth() -> MongoServer {
    start(Mode::Auth)
        .unwrap_or_else(|reason| panic!("the auth test MongoDB did not start: {reason}"))
}

/// A private server that reports a standalone topology (`--standalone`: no replica-set
/// advertisement in `hello`); stopped on Drop.
pub fn start_mongo_standalone() -> MongoServer {
    start(Mode::Standalone)
        .unwrap_or_else(|reason| panic!("the standalone test MongoDB did not start: {reason}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Auth,
    Standalone,
}

/// A database name that no other test (in this run or an earlier one) uses:
/// `t_<test name>_<pid>_<n>`, cut to MongoDB's 63-byte limit, only `[A-Za-z0-9_]`.
pub fn fresh_db_name(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{}_{n}", std::process::id());
    let cleaned: String = test_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(63 - 2 - suffix.len())
        .collect();
    format!("t_{cleaned}{suffix}")
}

impl MongoServer {
    /// `mongodb://127.0.0.1:PORT/<db>` without credentials.
    pub fn uri_for_db(&self, db: &str) -> String {
        format!("{}/{db}", self.uri)
    }

    /// `mongodb://<user>:<password>@127.0.0.1:PORT/<db>?authSource=admin`, both percent-encoded.
    pub fn uri_with_credentials(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "mongodb://{}:{}@127.0.0.1:{}/{db}?authSource=admin",
            percent_encode(user),
            percent_encode(password),
            self.port
        )
    }

    /// A URI with full rights: the admin user's on an auth server, the plain one otherwise.
    pub fn admin_uri(&self, db: &str) -> String {
        match &self.admin {
            Some(admin) => self.uri_with_credentials(&admin.user, &admin.password, db),
            None => self.uri_for_db(db),
        }
    }

    /// A client with full rights. Create one per test: a client belongs to the runtime of the
    /// test that made it.
    pub async fn client(&self) -> Client {
        client_for(&self.admin_uri("admin"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test MongoDB: {e}"))
    }

    /// Creates a user in `admin` with the given `(role, database)` pairs.
    pub async fn create_user(&self, user: &str, password: &str, roles: &[(&str, &str)]) {
        let roles: Vec<Document> = roles
            .iter()
            .map(|(role, db)| doc! { "role": *role, "db": *db })
            .collect();
        self.client()
            .await
            .database("admin")
            .run_command(doc! { "createUser": user, "pwd": password, "roles": roles })
            .await
            .unwrap_or_else(|e| panic!("cannot create test user {user}: {e}"));
    }
}

async fn client_for(uri: &str) -> mongodb::error::Result<Client> {
    let mut options = ClientOptions::parse(uri).await?;
    options.server_selection_timeout = Some(Duration::from_secs(10));
    options.connect_timeout = Some(Duration::from_secs(5));
    Client::with_options(options)
}

fn start(mode: Mode) -> Result<MongoServer, String> {
    let auth = mode == Mode::Auth;
    let binary = mongod_binary();
    let mut last_error = String::new();
    // A port picked as free can be taken before the server binds it: retry on a new one.
    for _attempt in 0..3 {
        let port = free_port();
        let dir = fresh_dir("mongo");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {data:?}: {e}"))?;
        let log = dir.join("server.log");
        let log_file = File::create(&log).map_err(|e| format!("cannot create {log:?}: {e}"))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("cannot dup {log:?}: {e}"))?;

        let mut command = Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(&data);
        match mode {
            Mode::Auth => command.arg("--auth"),
            Mode::Standalone => command.arg("--standalone"),
            Mode::Shared => &mut command,
        };
        if binary.file_name() == Some(std::ffi::OsStr::new("secantusd-rs")) {
            // Its defaults preallocate a 128 MB log per server and a 4 GB cache; tests need
            // neither (the python fallback does not take these flags).
            command.args(["--log-file-max", "8MB", "--cache-size", "256M"]);
        }
        // The binary itself, not a shell around it: we must hold the server's own pid.
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let pid = child.id();
        let mut process = ServerProcess::guard("mongo", pid, Some(child), dir, log);

        let uri = format!("mongodb://127.0.0.1:{port}");
        // Generous: the python fallback server is several times slower to start.
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = wait_for_tcp(port, deadline, &mut process).and_then(|()| {
            let uri = uri.clone();
            block_on(async move { wait_until_ready(&uri, auth).await })
        });
        match ready {
            Ok(admin) => {
                return Ok(MongoServer {
                    uri,
                    port,
                    admin,
                    process,
                })
            }
            Err(e) => {
                last_error = format!(
                    "{e}\n--- server log ({}) ---\n{}",
                    binary.display(),
                    process.log_tail()
                );
            }
        }
    }
    Err(last_error)
}

/// Pings until the server answers; on an auth server, creates the root user through the
/// localhost exception (allowed only while no user exists).
async fn wait_until_ready(uri: &str, auth: bool) -> Result<Option<Credentials>, String> {
    let client = client_for(uri).await.map_err(|e| e.to_string())?;
    let admin_db = client.database("admin");
    // `hello` needs no authentication, so it works on an --auth server too.
    admin_db
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| format!("no answer to hello: {e}"))?;
    if !auth {
        return Ok(None);
    }
    let admin = Credentials {
        user: "upstep-test-root".into(),
        password: "RootPw-test-only".into(),
    };
    admin_db
        .run_command(doc! {
            "createUser": &admin.user,
            "pwd": &admin.password,
            "roles": [ { "role": "root", "db": "admin" } ],
        })
        .await
        .map_err(|e| format!("cannot create the root user: {e}"))?;
    Ok(Some(admin))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (enough for userinfo).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
