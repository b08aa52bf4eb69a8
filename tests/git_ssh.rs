//! Issue 4: the git source over SSH, end to end against a real OpenSSH server on a
//! loopback port. With the server's host key in `--known-hosts` and an authorized
//! `--ssh-key`, commits are fetched and followed; a host key that is not listed, or a key
//! the server does not accept, fails the poll with an error that says so, and nothing is
//! fetched or served.
//!
//! sshd runs from `/usr/sbin/sshd` (Debian's openssh-server, installed by .ci/run) with a
//! config, host key and authorized key of its own in a temp dir, logging in as the user
//! running the test. Without sshd these tests skip, and fail under `CI`.
mod util;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attache::config::yaml::Limits;
use attache::source::Source;
use attache::source::git::{Auth, GitConfig, GitSource, Reference};

const SSHD: &str = "/usr/sbin/sshd";

fn sshd_available() -> bool {
    if Path::new(SSHD).is_file() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no {SSHD} (apt-get install openssh-server)"
    );
    eprintln!("skipping: no {SSHD}");
    false
}

fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A new ed25519 key pair at `path` and `path.pub`.
fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "attache-test", "-f"])
        .arg(path));
}

/// `type base64` of a public key file.
fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).expect("read public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An OpenSSH server on 127.0.0.1, killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    user: String,
}

impl Sshd {
    /// Starts sshd with its own host key, accepting `client_key.pub` for the current user.
    fn start(dir: &Path, client_key: &Path) -> Sshd {
        let user = run(Command::new("id").arg("-un"));
        let root = run(Command::new("id").arg("-u")) == "0";
        if root {
            // sshd started as root wants its privilege separation directory, which a
            // fresh machine (no init system ran the service) lacks.
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        keygen(&dir.join("host_key"));
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.join("authorized_keys"),
        )
        .expect("authorized_keys");
        let port = util::free_port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
SetEnv PATH={path}
LogLevel VERBOSE
",
            dir = dir.display(),
            path = std::env::var("PATH").unwrap_or_default(),
        );
        std::fs::write(dir.join("sshd_config"), config).expect("write sshd_config");
        let log = std::fs::File::create(dir.join("sshd.log")).expect("sshd log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        let mut sshd = Sshd {
            child,
            port,
            dir: dir.to_owned(),
            user,
        };
        sshd.wait_for_banner();
        sshd
    }

    fn wait_for_banner(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not answer on {addr}:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The URL of the repository at `repo` (an absolute path).
    fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// A known_hosts line for this server with `key` (`type base64`).
    fn known_hosts_line(&self, key: &str) -> String {
        format!("[127.0.0.1]:{} {key}\n", self.port)
    }

    fn host_key(&self) -> String {
        public_key(&self.dir.join("host_key"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository at `dir/repo` on branch main with one commit of a gateway config.
fn repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    run(Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(&repo));
    commit(
        &repo,
        "gateway.yaml",
        &util::gateway_yaml(8080, "/", "echo:80"),
    );
    repo
}

/// Writes `file` and commits it; returns the commit id.
fn commit(repo: &Path, file: &str, text: &str) -> String {
    std::fs::write(repo.join(file), text).expect("write file");
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args))
    };
    git(&["add", file]);
    git(&["commit", "-q", "-m", &format!("update {file}")]);
    git(&["rev-parse", "HEAD"])
}

fn source(url: &str, state: &Path, key: &Path, known_hosts: &Path) -> GitSource {
    GitSource::new(GitConfig {
        url: url.to_owned(),
        reference: Reference::Branch("main".into()),
        subdir: None,
        state_dir: state.to_owned(),
        interval: Duration::from_secs(1),
        auth: Auth {
            ssh_key: Some(key.to_owned()),
            known_hosts: Some(known_hosts.to_owned()),
            https_token_file: None,
        },
        limits: Limits::default(),
    })
}

/// The commit id of a poll that found a new revision.
fn changed(source: &mut GitSource, sshd: &Sshd) -> String {
    match source.poll() {
        Ok(attache::source::Poll::Changed(revision)) => {
            assert!(
                revision
                    .files
                    .iter()
                    .any(|f| f.path.ends_with("gateway.yaml")),
                "the commit's files are read: {:?}",
                revision.files.iter().map(|f| &f.path).collect::<Vec<_>>()
            );
            revision.meta.id.clone()
        }
        Ok(other) => panic!("expected a new revision, got {other:?}"),
        Err(e) => panic!("poll failed: {e}\nsshd log:\n{}", sshd.log()),
    }
}

#[test]
fn a_listed_host_key_and_an_authorized_key_fetch_and_follow_commits() {
    if !sshd_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("client_key");
    keygen(&key);
    let sshd_dir = dir.path().join("sshd");
    std::fs::create_dir(&sshd_dir).expect("mkdir");
    let sshd = Sshd::start(&sshd_dir, &key);
    let repo = repo(dir.path());
    let head = commit(&repo, "other.yaml", "# nothing yet\n");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line(&sshd.host_key())).expect("write");

    let mut source = source(
        &sshd.url(&repo),
        &dir.path().join("state"),
        &key,
        &known_hosts,
    );
    assert_eq!(changed(&mut source, &sshd), head);
    assert!(
        matches!(source.poll(), Ok(attache::source::Poll::Unchanged)),
        "nothing new"
    );
    let next = commit(&repo, "other.yaml", "# a new commit\n");
    assert_eq!(
        changed(&mut source, &sshd),
        next,
        "the new commit is followed"
    );
}

#[test]
fn a_host_key_not_in_known_hosts_is_refused_and_nothing_is_fetched() {
    if !sshd_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("client_key");
    keygen(&key);
    let sshd_dir = dir.path().join("sshd");
    std::fs::create_dir(&sshd_dir).expect("mkdir");
    let sshd = Sshd::start(&sshd_dir, &key);
    let repo = repo(dir.path());
    let url = sshd.url(&repo);
    // Another key for this host (a man in the middle, or a rebuilt server)...
    let impostor = dir.path().join("impostor");
    keygen(&impostor);
    let changed_key = dir.path().join("known_hosts.changed");
    std::fs::write(&changed_key, sshd.known_hosts_line(&public_key(&impostor))).expect("write");
    // ... or no line for it at all.
    let unlisted = dir.path().join("known_hosts.unlisted");
    std::fs::write(&unlisted, format!("github.com {}\n", public_key(&impostor))).expect("write");

    let state = dir.path().join("state");
    for (known_hosts, hint) in [(&changed_key, "key changed"), (&unlisted, "")] {
        let err = source(&url, &state, &key, known_hosts)
            .poll()
            .expect_err("the host key is not listed");
        let text = err.to_string();
        assert!(
            text.contains(&format!("host key of [127.0.0.1]:{}", sshd.port))
                && text.contains("ssh-ed25519")
                && text.contains("is not in known_hosts")
                && text.contains(hint),
            "{text}"
        );
    }
    // Nothing came over the connection: the local clone holds no commit.
    let clone = git2::Repository::open_bare(GitSource::clone_dir(&state, &url)).expect("clone");
    let head = run(Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["rev-parse", "HEAD"]));
    assert!(
        clone
            .find_commit(git2::Oid::from_str(&head).expect("sha"))
            .is_err()
    );
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "no login happened:\n{}",
        sshd.log()
    );

    // `attache serve` has nothing to serve from it and says why.
    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["serve", "--git", &url])
        .arg("--ssh-key")
        .arg(&key)
        .arg("--known-hosts")
        .arg(&changed_key)
        .arg("--state-dir")
        .arg(dir.path().join("serve-state"))
        .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--endpoints", "dns"])
        .output()
        .expect("run attache serve");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing to serve") && stderr.contains("is not in known_hosts"),
        "{stderr}"
    );
}

#[test]
fn a_key_the_server_does_not_accept_fails_authentication() {
    if !sshd_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let authorized = dir.path().join("client_key");
    keygen(&authorized);
    let stranger = dir.path().join("stranger_key");
    keygen(&stranger);
    let sshd_dir = dir.path().join("sshd");
    std::fs::create_dir(&sshd_dir).expect("mkdir");
    let sshd = Sshd::start(&sshd_dir, &authorized);
    let repo = repo(dir.path());
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line(&sshd.host_key())).expect("write");

    let err = source(
        &sshd.url(&repo),
        &dir.path().join("state"),
        &stranger,
        &known_hosts,
    )
    .poll()
    .expect_err("the key is not authorized");
    let text = err.to_string();
    assert!(
        text.contains("cannot reach")
            && text.contains("authentication failed")
            && text.contains(&stranger.display().to_string())
            && text.contains(&format!("for user {}", sshd.user)),
        "{text}\nsshd log:\n{}",
        sshd.log()
    );
}

/// `ssh://host/repo` without `user@`: libgit2 asks for a user name before the key;
/// attache answers `git` (what hosting services expect) and then offers the key, rather
/// than asking for an `--ssh-key` that was given. This server lets in only the current
/// user, so the login as `git` is refused, by name.
#[test]
fn a_url_without_a_user_logs_in_as_git_with_the_key() {
    if !sshd_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("client_key");
    keygen(&key);
    let sshd_dir = dir.path().join("sshd");
    std::fs::create_dir(&sshd_dir).expect("mkdir");
    let sshd = Sshd::start(&sshd_dir, &key);
    let repo = repo(dir.path());
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line(&sshd.host_key())).expect("write");
    let url = format!("ssh://127.0.0.1:{}{}", sshd.port, repo.display());
    let err = source(&url, &dir.path().join("state"), &key, &known_hosts)
        .poll()
        .expect_err("only the current user may log in");
    let text = err.to_string();
    assert!(
        text.contains("authentication failed")
            && text.contains(&key.display().to_string())
            && text.contains("for user git"),
        "{text}\nsshd log:\n{}",
        sshd.log()
    );
    assert!(
        sshd.log().contains("Invalid user git"),
        "the server saw a login as git:\n{}",
        sshd.log()
    );
}
