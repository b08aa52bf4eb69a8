//! Writes a generated gateway repository of N Mappings to a directory, the same repository
//! the `pipeline` benchmark measures, so whole-binary figures (`attache render` time and
//! peak RSS) can be taken on it:
//!
//! ```sh
//! cargo run --release --example gen_repo -- /tmp/repo-10k 10000
//! /usr/bin/time -v target/release/attache render /tmp/repo-10k > /dev/null
//! ```

use std::path::PathBuf;

#[path = "../benches/support/generate.rs"]
mod generate;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: gen_repo DIR MAPPINGS");
        std::process::exit(2);
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("gen_repo: MAPPINGS must be a number, got {count:?}");
        std::process::exit(2);
    };
    let root = PathBuf::from(dir);
    for (path, text) in generate::repo(count) {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    println!("wrote {count} Mappings to {}", root.display());
    Ok(())
}
