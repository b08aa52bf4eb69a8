//! README.md's walkthrough, run as written.
//!
//! The walkthrough is the newcomer's path: commit a Mapping, see Envoy route it, commit a
//! typo and see it rejected, `git revert`, see the route gone. This test reads the
//! section from README.md and runs its `sh` blocks in order with bash, from the crate
//! root, in a fresh `$HOME`; the block that starts `scripts/run-example` runs in the
//! background for the rest. A ```` ```text ```` block right after a `sh` block is that
//! block's expected output: every line of it must appear in what the commands printed.
//! So a README that drifts from what attache does fails here.
//!
//! The only differences from a person's terminal are in the environment: prebuilt debug
//! binaries (`ATTACHE`, `ECHO_BACKEND`: no release build inside a test), the test's
//! Envoy (`ENVOY`), and a git identity.

mod util;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECTION: &str = "## Walkthrough";
/// The marker `scripts/run-example` prints once Envoy is ready.
const READY: &str = "The gateway is up";
/// The fixed loopback ports `scripts/run-example` uses (Envoy, attache, backends).
const PORTS: [u16; 8] = [8080, 8443, 8877, 9001, 9002, 9003, 9901, 18000];
const START_LIMIT: Duration = Duration::from_secs(120);
const STEP_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Step {
    script: String,
    expected: Option<String>,
}

/// The walkthrough's `sh` blocks, each with the `text` block that follows it, if any.
fn walkthrough(readme: &str) -> Vec<Step> {
    let start = readme
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let body = &readme[start + SECTION.len()..];
    let body = body.find("\n## ").map_or(body, |end| &body[..end]);

    let mut steps: Vec<Step> = Vec::new();
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let lang = lang.trim().to_owned();
        let mut block = String::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            block.push_str(line);
            block.push('\n');
        }
        match lang.as_str() {
            "sh" => steps.push(Step {
                script: block,
                expected: None,
            }),
            "text" => {
                let last = steps
                    .last_mut()
                    .expect("a text block follows the sh block whose output it shows");
                assert!(
                    last.expected.is_none(),
                    "two text blocks after one sh block"
                );
                last.expected = Some(block);
            }
            other => panic!("walkthrough block of unexpected language {other:?}"),
        }
    }
    steps
}

/// Kills the background `scripts/run-example` (its whole process group) on drop.
struct Background {
    child: Child,
    out: PathBuf,
    tmp: PathBuf,
}

impl Background {
    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The script's own output and the logs it keeps in its work directory.
    fn logs(&self) -> String {
        let mut all = format!("--- scripts/run-example output\n{}", self.output());
        if let Ok(entries) = fs::read_dir(&self.tmp) {
            for entry in entries.flatten() {
                for log in ["attache.log", "envoy.log", "backends.log"] {
                    let path = entry.path().join(log);
                    if let Ok(text) = fs::read_to_string(&path) {
                        let tail: Vec<&str> = text.lines().rev().take(60).collect();
                        all.push_str(&format!("--- {} (last lines)\n", path.display()));
                        for line in tail.into_iter().rev() {
                            all.push_str(line);
                            all.push('\n');
                        }
                    }
                }
            }
        }
        all
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn bash(script: &str, home: &Path, tmp: &Path, env: &[(&str, PathBuf)]) -> Command {
    let mut command = Command::new("bash");
    // -e as a careful reader would stop at the first failing command; no pipefail, as
    // in an interactive shell (`curl ... | head` may end curl early).
    command
        .args(["-e", "-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", home)
        .env("TMPDIR", tmp)
        .env("GIT_AUTHOR_NAME", "Walkthrough Reader")
        .env("GIT_AUTHOR_EMAIL", "reader@example.com")
        .env("GIT_COMMITTER_NAME", "Walkthrough Reader")
        .env("GIT_COMMITTER_EMAIL", "reader@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs one step to completion (bounded), returning its stdout or why it failed.
fn run_step(mut command: Command, out_dir: &Path, index: usize) -> Result<String, String> {
    let out = out_dir.join(format!("step-{index}.out"));
    let err = out_dir.join(format!("step-{index}.err"));
    let mut child = command
        .stdout(fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(fs::File::create(&err).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let deadline = Instant::now() + STEP_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {STEP_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!("{status}\nstdout:\n{stdout}\nstderr:\n{stderr}"))
    }
}

/// The `echo_backend` example's binary, built for this test: `cargo test --all-targets`
/// compiles examples only as test harnesses, never as the program `scripts/run-example`
/// runs. Cargo holds no lock while tests run, so the nested build is an incremental
/// link of one example against the already built library.
fn echo_backend_binary(examples: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--quiet", "--example", "echo_backend"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build --example echo_backend failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let binary = examples.join("echo_backend");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "cargo built echo_backend, but not at {}",
            binary.display()
        ))
    }
}

fn ports_in_use() -> Vec<u16> {
    PORTS
        .into_iter()
        .filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_err())
        .collect()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let steps = walkthrough(&readme);
    assert!(
        steps
            .iter()
            .any(|s| s.script.contains("scripts/run-example")),
        "the walkthrough starts the gateway with scripts/run-example"
    );

    let Some(envoy) = util::envoy_binary() else {
        return;
    };
    let attache = PathBuf::from(env!("CARGO_BIN_EXE_attache"));
    let examples = attache.parent().expect("target dir").join("examples");
    let echo_backend = echo_backend_binary(&examples).unwrap_or_else(|why| panic!("{why}"));
    let busy = ports_in_use();
    if !busy.is_empty() {
        let why = format!("the walkthrough's fixed ports {busy:?} are in use on 127.0.0.1");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
        return;
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let tmp = dir.path().join("tmp");
    let outputs = dir.path().join("outputs");
    for d in [&home, &tmp, &outputs] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let env = [
        ("ATTACHE", attache),
        ("ECHO_BACKEND", echo_backend),
        ("ENVOY", envoy),
    ];

    let mut background: Option<Background> = None;
    for (index, step) in steps.iter().enumerate() {
        let context = || {
            background
                .as_ref()
                .map_or_else(String::new, Background::logs)
        };
        if step.script.contains("scripts/run-example") {
            assert!(background.is_none(), "the gateway is started once");
            let out = outputs.join("run-example.out");
            let mut command = bash(&step.script, &home, &tmp, &env);
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let log = fs::File::create(&out).expect("output file");
            let child = command
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("bash");
            let mut started = Background {
                child,
                out,
                tmp: tmp.clone(),
            };
            let deadline = Instant::now() + START_LIMIT;
            while !started.output().contains(READY) {
                if let Ok(Some(status)) = started.child.try_wait() {
                    panic!("scripts/run-example exited ({status}):\n{}", started.logs());
                }
                assert!(
                    Instant::now() < deadline,
                    "the gateway did not come up within {START_LIMIT:?}:\n{}",
                    started.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            background = Some(started);
            continue;
        }

        let stdout = run_step(bash(&step.script, &home, &tmp, &env), &outputs, index)
            .unwrap_or_else(|why| {
                panic!(
                    "walkthrough step {index} failed:\n{}\n{why}\n{}",
                    step.script,
                    context()
                )
            });
        if let Some(expected) = &step.expected {
            let printed: Vec<&str> = stdout.lines().map(str::trim).collect();
            for line in expected.lines().map(str::trim).filter(|l| !l.is_empty()) {
                assert!(
                    printed.contains(&line),
                    "walkthrough step {index}:\n{}\nshould print {line:?}; it printed:\n{stdout}\n{}",
                    step.script,
                    context()
                );
            }
        }
    }
    assert!(background.is_some(), "the gateway was started");
}

#[test]
fn the_walkthrough_is_found_and_pairs_outputs_with_commands() {
    let readme = "# x\n## Walkthrough\n```sh\necho a\n```\ntext\n```text\na\n```\n```sh\ntrue\n```\n## Next\n```sh\nnot this\n```\n";
    let steps = walkthrough(readme);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0].script, "echo a\n");
    assert_eq!(steps[0].expected.as_deref(), Some("a\n"));
    assert_eq!(steps[1].expected, None);
}

/// Every YAML example in README.md's configuration reference, together, is a revision
/// `attache validate` accepts: the reference cannot show a field attache rejects.
#[test]
fn the_configuration_reference_examples_validate() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("## Configuration reference")
        .expect("README.md has a configuration reference");
    let section = &readme[start..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut examples = 0;
    let mut rest = section;
    while let Some(open) = rest.find("```yaml\n") {
        let body = &rest[open + "```yaml\n".len()..];
        let close = body.find("```").expect("a closed yaml block");
        examples += 1;
        fs::write(
            dir.path().join(format!("example-{examples:02}.yaml")),
            &body[..close],
        )
        .expect("write example");
        rest = &body[close + 3..];
    }
    assert!(examples >= 8, "only {examples} YAML examples found");

    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("run attache validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the README's examples are rejected:\n{report}"
    );
    assert!(report.contains("0 errors"), "{report}");
}
