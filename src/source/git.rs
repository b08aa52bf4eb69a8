//! A git source: a remote repository, polled and fetched into a bare clone.
//!
//! The clone lives in the state dir and is made once; every poll first asks the remote
//! where the tracked ref points (one small request, the `ls-remote` of git) and fetches
//! only when that moved. Files are read straight from the commit's tree, never checked
//! out, so a revision is exactly one commit and cannot be torn by a concurrent fetch.
//!
//! Since a poll is a no-op while the ref stays put, a rejected commit is not tried again
//! until someone pushes; a force-push or a deleted-and-recreated branch is just another
//! move of the ref (fetched with a `+` refspec, so history rewrites are followed).
//!
//! Authentication: an SSH key (with a `known_hosts` file that the server's host key must
//! be listed in; there is no "accept any key" mode) or an HTTPS token read from a file on
//! every fetch, so a rotated Kubernetes Secret takes effect without a restart.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions, Oid,
    RemoteCallbacks, Repository, TreeWalkMode, TreeWalkResult,
};
use sha2::{Digest, Sha256};

use super::known_hosts::KnownHosts;
use super::{Poll, Revision, Schedule, Source};
use crate::config::{Diagnostic, ResourceRef, Severity, SourceFile, yaml::Limits};
use crate::pipeline::RevisionMeta;

/// The SSH user when the URL names none (`ssh://host/repo`), as hosting services expect.
const DEFAULT_SSH_USER: &str = "git";

/// What to follow in the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The tip of a branch (`--branch`, default `main`).
    Branch(String),
    /// A tag, lightweight or annotated (`--tag`).
    Tag(String),
    /// One pinned commit (`--rev`, a full or abbreviated SHA): fetched once, then never
    /// polled again.
    Rev(String),
}

impl Reference {
    fn remote_ref(&self) -> Option<String> {
        match self {
            Reference::Branch(b) => Some(format!("refs/heads/{b}")),
            Reference::Tag(t) => Some(format!("refs/tags/{t}")),
            Reference::Rev(_) => None,
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Branch(b) => write!(f, "branch {b}"),
            Reference::Tag(t) => write!(f, "tag {t}"),
            Reference::Rev(r) => write!(f, "commit {r}"),
        }
    }
}

/// How to reach the remote.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// A private key for SSH remotes.
    pub ssh_key: Option<PathBuf>,
    /// The host keys SSH servers must present; required for SSH remotes.
    pub known_hosts: Option<PathBuf>,
    /// A file holding an HTTPS access token, re-read on every fetch.
    pub https_token_file: Option<PathBuf>,
}

/// A git source's settings.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// The remote: `https://`, `http://`, `ssh://`, `git@host:path`, `git://` or `file://`.
    pub url: String,
    pub reference: Reference,
    /// Only files below this directory of the tree are config (`--git-path`).
    pub subdir: Option<String>,
    /// The bare clone goes below `STATE_DIR/git/`.
    pub state_dir: PathBuf,
    /// How often the remote is asked whether the ref moved.
    pub interval: std::time::Duration,
    pub auth: Auth,
    pub limits: Limits,
}

/// Why a poll of the remote failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the local clone {path}")]
    Clone {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot reach {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{url} has no {reference}")]
    MissingRef { url: String, reference: Reference },
    #[error("fetching {reference} from {url} failed: {message}")]
    Fetch {
        url: String,
        reference: Reference,
        message: String,
    },
    #[error("{object} is not a commit: {message}")]
    NotACommit { object: String, message: String },
    #[error("commit {commit} has no directory {subdir:?}")]
    MissingSubdir { commit: String, subdir: String },
    #[error("reading commit {commit}: {message}")]
    Read { commit: String, message: String },
    #[error("cannot read the HTTPS token from {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    KnownHosts(#[from] super::known_hosts::Error),
}

/// Polls one remote ref.
pub struct GitSource {
    config: GitConfig,
    repo: Option<Repository>,
    /// The commit of the last revision returned; a poll that finds the ref here is a no-op.
    last: Option<Oid>,
}

impl GitSource {
    pub fn new(config: GitConfig) -> GitSource {
        GitSource {
            config,
            repo: None,
            last: None,
        }
    }

    /// Where the bare clone of `url` lives: one directory per URL, so changing `--git`
    /// never mixes two repositories' objects.
    pub fn clone_dir(state_dir: &Path, url: &str) -> PathBuf {
        let digest = Sha256::digest(url.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        state_dir.join("git").join(format!("{name}.git"))
    }

    fn repo(&mut self) -> Result<&Repository, Error> {
        if self.repo.is_none() {
            let path = Self::clone_dir(&self.config.state_dir, &self.config.url);
            let clone_error = |source| Error::Clone {
                path: path.clone(),
                source,
            };
            let repo = match Repository::open_bare(&path) {
                Ok(repo) => repo,
                Err(_) => {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| clone_error(git2::Error::from_str(&e.to_string())))?;
                    Repository::init_bare(&path).map_err(clone_error)?
                }
            };
            self.repo = Some(repo);
        }
        match &self.repo {
            Some(repo) => Ok(repo),
            None => unreachable!("set above"),
        }
    }

    /// Where the remote's ref points now (one round trip, nothing downloaded).
    fn remote_head(&mut self, name: &str) -> Result<Oid, Error> {
        let url = self.config.url.clone();
        let reference = self.config.reference.clone();
        let (callbacks, refused) = self.callbacks()?;
        let repo = self.repo()?;
        let mut remote = repo.remote_anonymous(&url).map_err(|e| Error::Connect {
            url: redact(&url),
            message: e.message().to_owned(),
        })?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(callbacks), None)
            .map_err(|e| Error::Connect {
                url: redact(&url),
                message: refused.why(&e),
            })?;
        let heads = connection.list().map_err(|e| Error::Connect {
            url: redact(&url),
            message: e.message().to_owned(),
        })?;
        // For an annotated tag, `name^{}` is the commit it points at.
        let peeled = format!("{name}^{{}}");
        let find = |wanted: &str| heads.iter().find(|h| h.name() == wanted).map(|h| h.oid());
        find(&peeled)
            .or_else(|| find(name))
            .ok_or(Error::MissingRef {
                url: redact(&url),
                reference,
            })
    }

    fn fetch(&mut self, refspecs: &[String]) -> Result<(), Error> {
        let url = self.config.url.clone();
        let (callbacks, refused) = self.callbacks()?;
        let reference = self.config.reference.clone();
        let repo = self.repo()?;
        let mut remote = repo.remote_anonymous(&url).map_err(|e| Error::Connect {
            url: redact(&url),
            message: e.message().to_owned(),
        })?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .download_tags(AutotagOption::None);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| Error::Fetch {
                url: redact(&url),
                reference,
                message: refused.why(&e),
            })
    }

    /// The callbacks of one connection, and where they note why they refused the host
    /// key (libgit2 replaces that reason with its own "invalid or unknown remote ssh
    /// hostkey", which tells the operator nothing).
    fn callbacks(&self) -> Result<(RemoteCallbacks<'static>, HostKeyRefusal), Error> {
        let auth = &self.config.auth;
        let token = match &auth.https_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let known_hosts = match &auth.known_hosts {
            Some(path) => Some(KnownHosts::from_file(path)?),
            None => None,
        };
        let ssh_key = auth.ssh_key.clone();
        let port = ssh_port(&self.config.url);
        let tries = Cell::new(0u32);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, username, allowed| {
            // A URL without `user@` makes libgit2 ask for the SSH user name first; `git`
            // is the one hosting services expect. Not a try: the key comes next.
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(username.unwrap_or(DEFAULT_SSH_USER));
            }
            // libgit2 asks again after a refused credential; a second ask means the
            // first was wrong, and asking forever would hang the poll.
            tries.set(tries.get() + 1);
            if tries.get() > 1 {
                let offered = match (&ssh_key, &token) {
                    (Some(key), _) if allowed.contains(CredentialType::SSH_KEY) => {
                        format!("the SSH key {}", key.display())
                    }
                    (_, Some(_)) => "the HTTPS token".to_owned(),
                    _ => "the credentials".to_owned(),
                };
                return Err(git2::Error::from_str(&format!(
                    "authentication failed: the remote refused {offered} for user {}",
                    username.unwrap_or("?")
                )));
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &ssh_key
            {
                return Cred::ssh_key(username.unwrap_or(DEFAULT_SSH_USER), None, key, None);
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(token) = &token
            {
                return Cred::userpass_plaintext(username.unwrap_or("x-access-token"), token);
            }
            Err(git2::Error::from_str(
                "the remote asks for credentials: give --ssh-key (SSH) or --https-token-file (HTTPS)",
            ))
        });
        let refusal = HostKeyRefusal::default();
        let noted = refusal.clone();
        callbacks.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS certificates: libgit2's own verification against the system roots.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let checked = match &known_hosts {
                None => Err(format!(
                    "refusing the SSH host key of {host}: no --known-hosts file to check it against"
                )),
                Some(known) => match hostkey.hostkey() {
                    None => Err(format!("{host} presented no SSH host key")),
                    Some(key) => {
                        let key_type = hostkey.hostkey_type().map_or("unknown", |t| t.name());
                        known
                            .check(host, port, key_type, key)
                            .map_err(|e| e.to_string())
                    }
                },
            };
            checked
                .map(|()| CertificateCheckStatus::CertificateOk)
                .map_err(|why| {
                    let error = git2::Error::from_str(&why);
                    *noted.0.borrow_mut() = Some(why);
                    error
                })
        });
        Ok((callbacks, refusal))
    }

    fn revision(&mut self, oid: Oid) -> Result<Revision, Error> {
        let subdir = self.config.subdir.clone();
        let limits = self.config.limits;
        let source = self.describe();
        let repo = self.repo()?;
        read_commit(repo, oid, subdir.as_deref(), &limits, source)
    }
}

/// Why the host key of a connection was refused, noted by its certificate check.
#[derive(Debug, Clone, Default)]
struct HostKeyRefusal(Rc<RefCell<Option<String>>>);

impl HostKeyRefusal {
    /// The message for `error`: the refusal when the host key was refused, else git's.
    fn why(&self, error: &git2::Error) -> String {
        match self.0.borrow().as_ref() {
            Some(refused) => refused.clone(),
            None => error.message().to_owned(),
        }
    }
}

/// The revision at `oid` (a commit, or a tag pointing at one) of `repo`: the config files
/// of its tree below `subdir`, and who made it.
///
/// # Errors
///
/// When `oid` is not a commit, `subdir` is not a directory of its tree, or an object is
/// missing from the repository.
pub fn read_commit(
    repo: &Repository,
    oid: Oid,
    subdir: Option<&str>,
    limits: &Limits,
    source: String,
) -> Result<Revision, Error> {
    let commit = repo
        .find_object(oid, None)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| Error::NotACommit {
            object: oid.to_string(),
            message: e.message().to_owned(),
        })?;
    let id = commit.id().to_string();
    let read_error = |e: git2::Error| Error::Read {
        commit: id.clone(),
        message: e.message().to_owned(),
    };
    let mut tree = commit.tree().map_err(read_error)?;
    if let Some(subdir) = subdir.map(|s| s.trim_matches('/'))
        && !subdir.is_empty()
    {
        let missing = || Error::MissingSubdir {
            commit: id.clone(),
            subdir: subdir.to_owned(),
        };
        let entry = tree.get_path(Path::new(subdir)).map_err(|_| missing())?;
        tree = entry
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| missing())?;
    }
    let (files, problems) = read_tree(repo, &tree, limits).map_err(read_error)?;
    let author = commit.author();
    let meta = RevisionMeta {
        id,
        author: Some(format!(
            "{} <{}>",
            author.name().unwrap_or("?"),
            author.email().unwrap_or("?")
        )),
        message: Some(commit.message().unwrap_or_default().trim().to_owned()),
        time: commit.time().seconds(),
        source,
    };
    Ok(Revision {
        meta,
        files,
        problems,
    })
}

impl Source for GitSource {
    fn describe(&self) -> String {
        format!(
            "git {} ({})",
            redact(&self.config.url),
            self.config.reference
        )
    }

    fn poll(&mut self) -> Result<Poll, super::Error> {
        let oid = match self.config.reference.clone() {
            Reference::Rev(rev) => {
                if self.last.is_some() {
                    return Ok(Poll::Unchanged);
                }
                let local = self.repo()?.revparse_single(&rev).map(|o| o.id());
                match local {
                    Ok(oid) => oid,
                    Err(_) => {
                        // A pinned commit is reachable from some branch or tag.
                        self.fetch(&[
                            "+refs/heads/*:refs/remotes/origin/*".to_owned(),
                            "+refs/tags/*:refs/tags/*".to_owned(),
                        ])?;
                        self.repo()?
                            .revparse_single(&rev)
                            .map(|o| o.id())
                            .map_err(|_| Error::MissingRef {
                                url: redact(&self.config.url),
                                reference: self.config.reference.clone(),
                            })?
                    }
                }
            }
            reference => {
                let Some(name) = reference.remote_ref() else {
                    unreachable!("only a pinned commit has no remote ref")
                };
                let oid = self.remote_head(&name)?;
                if self.last == Some(oid) {
                    return Ok(Poll::Unchanged);
                }
                if self.repo()?.find_commit(oid).is_err() && self.repo()?.find_tag(oid).is_err() {
                    let local = match &reference {
                        Reference::Tag(_) => name.clone(),
                        _ => name.replacen("refs/heads/", "refs/remotes/origin/", 1),
                    };
                    self.fetch(&[format!("+{name}:{local}")])?;
                }
                oid
            }
        };
        let revision = self.revision(oid)?;
        self.last = Some(oid);
        Ok(Poll::Changed(Box::new(revision)))
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            interval: self.config.interval,
            // A webhook is one event: fetch at once.
            debounce: std::time::Duration::ZERO,
        }
    }
}

/// Every config file of `tree`, as `read_dir` would give for a checkout of it: `*.yaml`
/// and `*.yml` below it, dot-entries skipped, sorted by path.
fn read_tree(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    limits: &Limits,
) -> Result<(Vec<SourceFile>, Vec<Diagnostic>), git2::Error> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        if name.starts_with('.') {
            return TreeWalkResult::Skip;
        }
        if entry.kind() != Some(git2::ObjectType::Blob)
            || !(name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            return TreeWalkResult::Ok;
        }
        let path = format!("{dir}{name}");
        if entry.filemode() == 0o120000 {
            problems.push(Diagnostic {
                file: path.as_str().into(),
                line: 0,
                column: 0,
                severity: Severity::Error,
                resource: None::<ResourceRef>,
                field: String::new(),
                message: "is a symbolic link; links in a config repository are not followed"
                    .to_owned(),
            });
            return TreeWalkResult::Ok;
        }
        match repo.find_blob(entry.id()) {
            Ok(blob) => {
                // One byte past the limit is enough for the parser to report the size.
                let content = blob.content();
                let keep = content.len().min(limits.max_file_bytes.saturating_add(1));
                files.push(SourceFile {
                    path,
                    bytes: content[..keep].to_vec(),
                });
                TreeWalkResult::Ok
            }
            Err(e) => {
                failure = Some(e);
                TreeWalkResult::Abort
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, problems))
}

fn read_token(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|source| Error::Token {
            path: path.to_owned(),
            source,
        })
}

/// The SSH port of a remote URL: `ssh://host:PORT/...`, or 22.
fn ssh_port(url: &str) -> u16 {
    let Some(rest) = url.strip_prefix("ssh://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    // `[::1]:2222` or `host:2222`.
    let port = match host_port.rsplit_once("]:") {
        Some((_, port)) => Some(port),
        None if !host_port.starts_with('[') => host_port.rsplit_once(':').map(|(_, p)| p),
        None => None,
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// `url` without a password or token in its user info, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_ports() {
        assert_eq!(ssh_port("git@github.com:org/repo.git"), 22);
        assert_eq!(ssh_port("ssh://git@host:2222/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://host/repo.git"), 22);
        assert_eq!(ssh_port("ssh://git@[::1]:2200/repo"), 2200);
    }

    #[test]
    fn secrets_in_urls_are_redacted() {
        assert_eq!(
            redact("https://user:tok3n@github.com/org/repo.git"),
            "https://user:***@github.com/org/repo.git"
        );
        assert_eq!(
            redact("https://github.com/org/r"),
            "https://github.com/org/r"
        );
        assert_eq!(redact("git@github.com:org/r"), "git@github.com:org/r");
    }
}
