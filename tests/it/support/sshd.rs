//! A real OpenSSH server for tunnel tests: a temporary host key, a client key in its
//! authorized_keys (and a second key that is not), on a free loopback port; stopped on Drop and
//! by its watchdog when the test process ends.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, fresh_dir, wait_for_tcp, ServerProcess};
use super::tools::sshd_binary;

pub struct SshServer {
    pub port: u16,
    /// The key in authorized_keys.
    pub client_key: PathBuf,
    /// A key the server does not accept.
    pub refused_key: PathBuf,
    /// A known_hosts file with the server's host key pinned for `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// An empty known_hosts file.
    pub empty_known_hosts: PathBuf,
    pub dir: PathBuf,
    pub process: ServerProcess,
}

impl SshServer {
    /// The login this server accepts (tests run as root; any user with the key works).
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", whoami())
    }
}

fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "upstep-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

/// Starts a private sshd; panics with its log when it does not come up.
pub fn start_sshd() -> SshServer {
    let binary = sshd_binary();
    // Debian's sshd wants its privilege-separation directory.
    let _ = fs::create_dir_all("/run/sshd");
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let dir = fresh_dir("sshd");
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        let refused_key = dir.join("refused_ed25519");
        for key in [&host_key, &client_key, &refused_key] {
            keygen(key);
        }
        let authorized = dir.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized).expect("write authorized_keys");
        let port = free_port();
        let host_pub = fs::read_to_string(host_key.with_extension("pub")).expect("host key");
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = dir.join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
        )
        .expect("write known_hosts");
        let empty_known_hosts = dir.join("known_hosts.empty");
        fs::write(&empty_known_hosts, "").expect("write empty known_hosts");
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin yes\nAllowTcpForwarding yes\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .expect("write sshd_config");
        let log = dir.join("sshd.log");
        let log_file = File::create(&log).expect("create sshd.log");
        let child = Command::new(&binary)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let pid = child.id();
        let mut process = ServerProcess::guard("sshd", pid, Some(child), dir.clone(), log);
        match wait_for_tcp(port, Instant::now() + Duration::from_secs(15), &mut process) {
            Ok(()) => {
                return SshServer {
                    port,
                    client_key,
                    refused_key,
                    known_hosts,
                    empty_known_hosts,
                    dir,
                    process,
                }
            }
            Err(e) => last_error = format!("{e}\n--- sshd log ---\n{}", process.log_tail()),
        }
    }
    panic!("the test sshd did not start: {last_error}");
}
