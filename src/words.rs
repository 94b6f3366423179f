//! Words that agree with their numbers ("1 step", "2 steps"), and the one-line reason of a
//! connection failure. Every message that counts something goes through `count`. A leaf module
//! (it uses nothing of upstep), so every layer can word its messages with it.

/// `n` and the noun, singular for exactly one: `count(1, "step")` is "1 step",
/// `count(3, "entry")` is "3 entries".
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {}", plural(n, noun))
}

/// The noun as `n` needs it.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        return noun.to_string();
    }
    let consonant_y = noun.ends_with('y')
        && !noun.ends_with("ay")
        && !noun.ends_with("ey")
        && !noun.ends_with("oy");
    if consonant_y {
        format!("{}ies", &noun[..noun.len() - 1])
    } else if noun.ends_with('s') || noun.ends_with("sh") || noun.ends_with("ch") {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// "it" or "them", for a sentence about `n` things.
pub fn them(n: usize) -> &'static str {
    if n == 1 {
        "it"
    } else {
        "them"
    }
}

/// The sentence saying which node a tag runs with and where it came from (`source` as the
/// toolchain resolution words it: "PATH (/usr/bin/node)", "nvm (<dir>)", "provisioned with npm
/// into <dir>").
pub fn toolchain_notice(git_ref: &str, version: &str, source: &str) -> String {
    match source.strip_prefix("provisioned with npm into ") {
        Some(dir) => {
            format!("{git_ref} runs with node {version}, which was installed from npm into {dir}.")
        }
        None => format!("{git_ref} runs with node {version} from {source}."),
    }
}

/// The short cause of a failed connection, from a driver's (often many-line, nested) message:
/// "connection refused", "timed out", ... The full message belongs in the debug log.
pub fn connect_failure_reason(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let known = [
        ("connection refused", "connection refused"),
        ("failed to lookup address", "the host name does not resolve"),
        (
            "name or service not known",
            "the host name does not resolve",
        ),
        ("no such host", "the host name does not resolve"),
        ("connection reset", "the connection was reset"),
        ("network is unreachable", "the network is unreachable"),
        ("no route to host", "no route to host"),
        ("certificate", "the TLS certificate was refused"),
        ("tls", "the TLS handshake failed"),
        ("timed out", "timed out"),
        ("server selection timeout", "no server answered in time"),
    ];
    for (needle, reason) in known {
        if lower.contains(needle) {
            return reason.to_string();
        }
    }
    // Unknown: the first clause of the first line, bounded.
    let line = message.lines().next().unwrap_or("").trim();
    let clause = line.split([',', '{']).next().unwrap_or(line).trim();
    let clause: String = clause.chars().take(120).collect();
    if clause.is_empty() {
        "no answer".to_string()
    } else {
        clause
    }
}

/// The `host:port` list of a connection URI, without scheme, credentials, database or options.
pub fn uri_hosts(uri: &str) -> String {
    crate::redact::Uri::new(uri).hosts().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(0, "step"), "0 steps");
        assert_eq!(count(1, "step"), "1 step");
        assert_eq!(count(2, "blocker"), "2 blockers");
        assert_eq!(count(3, "entry"), "3 entries");
        assert_eq!(count(2, "day"), "2 days");
        assert_eq!(count(2, "process"), "2 processes");
        assert_eq!(count(1, "migration"), "1 migration");
        assert_eq!(them(1), "it");
        assert_eq!(them(2), "them");
    }

    #[test]
    fn toolchain_notices_read_as_sentences() {
        assert_eq!(
            toolchain_notice("v1.0.0", "20.8.1", "provisioned with npm into /c/toolchains/node-20.8.1"),
            "v1.0.0 runs with node 20.8.1, which was installed from npm into /c/toolchains/node-20.8.1."
        );
        assert_eq!(
            toolchain_notice("v1.0.0", "20.8.1", "PATH (/usr/bin/node)"),
            "v1.0.0 runs with node 20.8.1 from PATH (/usr/bin/node)."
        );
    }

    #[test]
    fn a_driver_error_becomes_its_cause() {
        let driver = "Server selection timeout: No available servers. Topology: { Type: \
                      Unknown, Servers: [ { Address: 127.0.0.1:1, Type: Unknown, Error: Kind: \
                      I/O error: Connection refused (os error 111), labels: {} } ] }, labels: {}";
        assert_eq!(connect_failure_reason(driver), "connection refused");
        assert_eq!(
            connect_failure_reason("Kind: I/O error: failed to lookup address information"),
            "the host name does not resolve"
        );
        assert_eq!(
            connect_failure_reason("Server selection timeout: No available servers"),
            "no server answered in time"
        );
        assert_eq!(connect_failure_reason("weird, thing"), "weird");
    }

    #[test]
    fn the_hosts_of_a_uri_carry_no_secret() {
        assert_eq!(
            uri_hosts("mongodb://admin:pw@db1:27017,db2:27017/novu?authSource=admin"),
            "db1:27017,db2:27017"
        );
        assert_eq!(uri_hosts("mongodb://127.0.0.1:27017"), "127.0.0.1:27017");
        assert_eq!(
            uri_hosts("mongodb+srv://u:p@cluster.example/db"),
            "cluster.example"
        );
    }
}
