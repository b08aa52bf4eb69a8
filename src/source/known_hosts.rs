//! Checking an SSH server's host key against an OpenSSH `known_hosts` file.
//!
//! libgit2 hands the key to a callback and, left alone, accepts any key. A GitOps
//! controller that accepted any key would serve whatever a man in the middle pushed, so
//! `--ssh-key` requires `--known-hosts`, and a key that is not listed fails the fetch with
//! an error that says which host and key type were seen.
//!
//! Supported lines: `host[,host...] keytype base64` with `*`/`?` wildcards, `!negation`
//! and `[host]:port`; `@revoked` markers. Hashed host names (`|1|...`, `ssh-keyscan -H`)
//! and `@cert-authority` lines are not supported: they are reported when the file is
//! loaded, never silently treated as a match.

use std::path::Path;

use base64::Engine;

/// One usable line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    patterns: Vec<String>,
    key: Vec<u8>,
    revoked: bool,
}

/// A parsed `known_hosts` file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Lines that were skipped, with why (`line N: ...`), for the error message.
    skipped: Vec<String>,
}

/// Why a host key was refused or the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read known_hosts file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server did not present a host key")]
    NoKey,
    #[error("host key of {host} ({key_type}) is revoked in known_hosts")]
    Revoked { host: String, key_type: String },
    #[error(
        "host key of {host} ({key_type}) is not in known_hosts{hint}; add it (e.g. `ssh-keyscan -p PORT HOST`) after checking its fingerprint"
    )]
    Unknown {
        host: String,
        key_type: String,
        hint: String,
    },
}

impl KnownHosts {
    /// Loads `path`.
    ///
    /// # Errors
    ///
    /// When it cannot be read.
    pub fn from_file(path: &Path) -> Result<KnownHosts, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(KnownHosts::parse(&text))
    }

    /// Parses the text of a `known_hosts` file.
    pub fn parse(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if first.starts_with('@') {
                match first {
                    "@revoked" => revoked = true,
                    marker => {
                        known
                            .skipped
                            .push(format!("line {}: {marker} is not supported", index + 1));
                        continue;
                    }
                }
                first = fields.next().unwrap_or_default();
            }
            if first.starts_with('|') {
                known.skipped.push(format!(
                    "line {}: hashed host names are not supported",
                    index + 1
                ));
                continue;
            }
            let (Some(_key_type), Some(encoded)) = (fields.next(), fields.next()) else {
                known
                    .skipped
                    .push(format!("line {}: expected `hosts keytype key`", index + 1));
                continue;
            };
            let Ok(key) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                known
                    .skipped
                    .push(format!("line {}: the key is not base64", index + 1));
                continue;
            };
            known.entries.push(Entry {
                patterns: first.split(',').map(str::to_owned).collect(),
                key,
                revoked,
            });
        }
        known
    }

    /// Whether `key` (the raw SSH public key blob) is a known key of `host`:`port`.
    ///
    /// # Errors
    ///
    /// When the key is revoked, or no line lists it for this host.
    pub fn check(&self, host: &str, port: u16, key_type: &str, key: &[u8]) -> Result<(), Error> {
        let name = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        let for_host: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, &name))
            .collect();
        if for_host.iter().any(|e| e.revoked && e.key == key) {
            return Err(Error::Revoked {
                host: name,
                key_type: key_type.to_owned(),
            });
        }
        if for_host.iter().any(|e| !e.revoked && e.key == key) {
            return Ok(());
        }
        let mut hint = String::new();
        if !for_host.is_empty() {
            hint.push_str(" (the file lists other keys for it: the key changed?)");
        }
        if !self.skipped.is_empty() {
            hint.push_str(&format!(" (skipped: {})", self.skipped.join("; ")));
        }
        Err(Error::Unknown {
            host: name,
            key_type: key_type.to_owned(),
            hint,
        })
    }
}

/// OpenSSH's rule: some positive pattern matches and no negated one does.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(pattern.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcards, ASCII case-insensitive as host names are.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .expect("base64")
    }

    #[test]
    fn a_listed_key_is_accepted_for_its_host_and_port() {
        let known = KnownHosts::parse(&format!(
            "# comment\ngithub.com,140.82.*.* ssh-ed25519 {KEY}\n[git.local]:2222 ssh-ed25519 {KEY}\n"
        ));
        assert!(known.check("github.com", 22, "ssh-ed25519", &key()).is_ok());
        assert!(
            known
                .check("140.82.112.3", 22, "ssh-ed25519", &key())
                .is_ok()
        );
        assert!(
            known
                .check("git.local", 2222, "ssh-ed25519", &key())
                .is_ok()
        );
        // The port is part of the name.
        assert!(known.check("git.local", 22, "ssh-ed25519", &key()).is_err());
        assert!(known.check("GitHub.COM", 22, "ssh-ed25519", &key()).is_ok());
    }

    #[test]
    fn another_key_for_a_known_host_is_refused_with_a_hint() {
        let known = KnownHosts::parse(&format!("github.com ssh-ed25519 {KEY}\n"));
        let err = known
            .check("github.com", 22, "ssh-rsa", b"another key")
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("github.com") && text.contains("ssh-rsa"),
            "{text}"
        );
        assert!(text.contains("key changed"), "{text}");
    }

    #[test]
    fn revoked_negated_and_hashed_lines() {
        let known = KnownHosts::parse(&format!(
            "@revoked bad.example ssh-ed25519 {KEY}\nbad.example ssh-ed25519 {KEY}\n*.corp,!secret.corp ssh-ed25519 {KEY}\n|1|abc=|def= ssh-ed25519 {KEY}\n@cert-authority * ssh-ed25519 {KEY}\n"
        ));
        assert!(matches!(
            known.check("bad.example", 22, "ssh-ed25519", &key()),
            Err(Error::Revoked { .. })
        ));
        assert!(known.check("git.corp", 22, "ssh-ed25519", &key()).is_ok());
        let err = known
            .check("secret.corp", 22, "ssh-ed25519", &key())
            .expect_err("negated");
        let text = err.to_string();
        assert!(
            text.contains("hashed host names are not supported"),
            "{text}"
        );
        assert!(text.contains("@cert-authority"), "{text}");
    }

    #[test]
    fn globs() {
        assert!(glob(b"*.example.com", b"a.b.example.com"));
        assert!(!glob(b"*.example.com", b"example.com"));
        assert!(glob(b"host?", b"host1"));
        assert!(!glob(b"host?", b"host12"));
        assert!(glob(b"*", b""));
    }
}
