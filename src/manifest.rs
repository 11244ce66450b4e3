//! The one manifest reader: files, directories (recursively, `*.yaml`/`*.yml`) and stdin, read
//! into [`Source`]s, and their YAML documents as JSON values. `keyfleet validate`,
//! `keyfleet render-policy` and the playground all read their manifests here.
//!
//! Directories are walked in name order so output is stable; hidden entries (`.git`, `.github`)
//! are skipped, and symbolic links to directories are not followed (no loops). A file named
//! explicitly is read whatever its extension. A directory without any manifest is an input
//! error: a CI step pointed at the wrong path must not pass silently.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// The name standard input is reported under.
pub const STDIN_NAME: &str = "<stdin>";

/// One input text: a file or standard input.
#[derive(Clone, Debug)]
pub struct Source {
    /// As reported in findings: the path as given (joined below a given directory), or
    /// [`STDIN_NAME`].
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The YAML documents of this source as JSON values, empty documents skipped. For readers
    /// that need no line numbers; `keyfleet validate` parses with positions instead.
    pub fn documents(&self) -> Result<Vec<Value>, InputError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(&self.text).map_err(|e| InputError {
            file: self.name.clone(),
            line: e.location().map(|l| l.line() as usize),
            column: e.location().map(|l| l.column() as usize),
            message: format!("not YAML: {e}"),
        })?;
        Ok(docs.into_iter().filter(|value| !value.is_null()).collect())
    }
}

/// One YAML document of the input and the name of the source it comes from.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub source: String,
    pub value: Value,
}

/// Every document of every input, in input order; the first unusable input (unreadable, not
/// UTF-8, no manifests in a directory, not YAML) is the error.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<Manifest>, InputError> {
    let (sources, errors) = read_inputs(paths);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let mut manifests = Vec::new();
    for source in &sources {
        manifests.extend(source.documents()?.into_iter().map(|value| Manifest {
            source: source.name.clone(),
            value,
        }));
    }
    Ok(manifests)
}

/// Input that cannot be validated at all (exit code 2): unreadable, not UTF-8, no manifests,
/// YAML syntax error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InputError {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            (Some(line), None) => write!(f, "{}:{line}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for InputError {}

fn input_error(file: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError {
        file: file.into(),
        line: None,
        column: None,
        message: message.into(),
    }
}

/// Reads every input: `-` is standard input (read once, however often it is named).
/// Returns what could be read, and an error for everything that could not.
pub fn read_inputs(paths: &[PathBuf]) -> (Vec<Source>, Vec<InputError>) {
    read_inputs_with_stdin(paths, &mut std::io::stdin().lock())
}

/// [`read_inputs`] with another reader as standard input.
pub fn read_inputs_with_stdin(
    paths: &[PathBuf],
    stdin: &mut dyn Read,
) -> (Vec<Source>, Vec<InputError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == "-" {
            if stdin_read {
                continue;
            }
            stdin_read = true;
            let mut bytes = Vec::new();
            match stdin.read_to_end(&mut bytes) {
                Ok(_) => match String::from_utf8(bytes) {
                    Ok(text) => sources.push(Source::new(STDIN_NAME, text)),
                    Err(_) => errors.push(input_error(STDIN_NAME, "not UTF-8 text")),
                },
                Err(e) => errors.push(input_error(STDIN_NAME, format!("cannot read: {e}"))),
            }
            continue;
        }
        let display = path.display().to_string();
        match std::fs::metadata(path) {
            Err(e) => errors.push(input_error(display, format!("cannot read: {e}"))),
            Ok(meta) if meta.is_dir() => {
                let mut files = Vec::new();
                walk(path, &mut files, &mut errors);
                if files.is_empty() {
                    errors.push(input_error(
                        display,
                        "no *.yaml or *.yml files in this directory (or below it)",
                    ));
                }
                for file in files {
                    read_file(&file, &mut sources, &mut errors);
                }
            }
            Ok(_) => read_file(path, &mut sources, &mut errors),
        }
    }
    (sources, errors)
}

fn read_file(path: &Path, sources: &mut Vec<Source>, errors: &mut Vec<InputError>) {
    let display = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => sources.push(Source::new(display, text)),
            Err(e) => errors.push(input_error(
                display,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )),
        },
        Err(e) => errors.push(input_error(display, format!("cannot read: {e}"))),
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Collects manifest files below `dir`, sorted by name at each level.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(input_error(
                dir.display().to_string(),
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => errors.push(input_error(
                dir.display().to_string(),
                format!("cannot read directory: {e}"),
            )),
        }
    }
    paths.sort();
    for path in paths {
        if is_hidden(&path) {
            continue;
        }
        // `symlink_metadata`: a link to a directory is not followed; a link to a file is read.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            errors.push(input_error(path.display().to_string(), "cannot read"));
            continue;
        };
        if meta.is_dir() {
            walk(&path, files, errors);
        } else if is_manifest(&path) && (meta.is_file() || path.is_file()) {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_read_once_and_named() {
        let mut stdin: &[u8] = b"kind: X\n";
        let (sources, errors) =
            read_inputs_with_stdin(&[PathBuf::from("-"), PathBuf::from("-")], &mut stdin);
        assert!(errors.is_empty());
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].name, STDIN_NAME);
        assert_eq!(sources[0].text, "kind: X\n");
    }

    #[test]
    fn directories_are_walked_sorted_skipping_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("b/c/z.yml"), "a: 1").unwrap();
        std::fs::write(root.join("b/a.yaml"), "a: 1").unwrap();
        std::fs::write(root.join("a.yaml"), "a: 1").unwrap();
        std::fs::write(root.join("README.md"), "#").unwrap();
        std::fs::write(root.join(".git/x.yaml"), "a: 1").unwrap();
        let (sources, errors) = read_inputs_with_stdin(&[root.to_path_buf()], &mut &b""[..]);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<String> = sources
            .iter()
            .map(|s| {
                Path::new(&s.name)
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a.yaml", "b/a.yaml", "b/c/z.yml"]);
    }

    #[test]
    fn missing_paths_and_empty_directories_are_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let (_, errors) =
            read_inputs_with_stdin(&[missing, dir.path().to_path_buf()], &mut &b""[..]);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.starts_with("cannot read:"));
        assert!(errors[1].message.contains("no *.yaml or *.yml files"));
    }
}
