//! A minimal data-driven test runner (the format of cockroachdb's and
//! raft-rs's `datadriven`), for the scenario files of the pure cores:
//! a new case is a few lines of text, no new Rust.
//!
//! ```text
//! # a comment
//! command arg key=value
//! optional input lines
//! ----
//! expected output lines
//! (a blank line ends the case)
//! ```
//!
//! Not the `datadriven` crate: this runner is ~100 lines, and the crate
//! would be a new dependency (and lock file change) for test code only.
//! `RAFTQ_REWRITE=1 cargo test` rewrites the expected outputs in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One case of a scenario file.
#[derive(Debug)]
pub struct Case {
    pub line: usize,
    pub cmd: String,
    /// `key=value` arguments; a bare word is a key with an empty value.
    pub args: BTreeMap<String, String>,
    /// The lines between the command and `----`, each with its `\n`.
    pub input: String,
}

impl Case {
    /// The argument `key` parsed, or `default` when absent. Panics (this is
    /// test code) with the case's line when it does not parse.
    pub fn arg<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.opt_arg(key).unwrap_or(default)
    }

    /// The argument `key` parsed, if present.
    pub fn opt_arg<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.args.get(key).map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("line {}: argument {key}={v} does not parse", self.line))
        })
    }

    pub fn str_arg(&self, key: &str) -> Option<&str> {
        self.args.get(key).map(String::as_str)
    }
}

/// The `.txt` files of `dir` (relative to the crate root), sorted.
pub fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    files
}

/// Runs every case of `path` through `run`, in order, and compares what it
/// answers with the expected output. Panics listing every mismatch.
pub fn run_file(path: &Path, mut run: impl FnMut(&Case) -> String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let rewrite = std::env::var_os("RAFTQ_REWRITE").is_some();
    let mut out: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            out.push(line.to_owned());
            i += 1;
            continue;
        }
        let start = i;
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default().to_owned();
        let args = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (w.to_owned(), String::new()),
            })
            .collect();
        i += 1;
        let mut input = String::new();
        while i < lines.len() && lines[i] != "----" {
            input.push_str(lines[i]);
            input.push('\n');
            i += 1;
        }
        assert!(i < lines.len(), "{}:{}: case without ----", path.display(), start + 1);
        out.extend(lines[start..=i].iter().map(|l| (*l).to_owned()));
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push(lines[i]);
            i += 1;
        }
        let case = Case { line: start + 1, cmd, args, input };
        let got = run(&case);
        let got: Vec<&str> = got.lines().collect();
        if got != expected {
            failures.push(format!(
                "{}:{}: {}\n--- expected\n{}\n--- got\n{}",
                path.display(),
                case.line,
                lines[start],
                expected.join("\n"),
                got.join("\n")
            ));
        }
        out.extend(got.iter().map(|l| (*l).to_owned()));
        cases += 1;
    }
    assert!(cases > 0, "{}: no cases", path.display());
    if rewrite {
        std::fs::write(path, out.join("\n") + "\n").expect("rewrite scenario file");
    } else {
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}
