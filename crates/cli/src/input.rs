//! Reading input files, directories and standard input, with size bounds.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest file (or standard input) read: far above any manifest or test body, small
/// enough that a wrong argument (a disk image, `/dev/zero`) ends with a message, not a hang.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;
/// The most files a directory argument may expand to.
pub const MAX_FILES: usize = 10_000;

/// One input, read.
#[derive(Debug, Clone)]
pub struct Source {
    /// The name used in messages (`-` shows as `<stdin>`).
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Source {
    pub fn text(&self) -> Result<&str, String> {
        std::str::from_utf8(&self.bytes).map_err(|e| {
            format!(
                "{}: not UTF-8 text (invalid byte at offset {})",
                self.name,
                e.valid_up_to()
            )
        })
    }
}

/// Reads `path` (`-` for standard input), refusing anything over [`MAX_INPUT_BYTES`].
pub fn read(path: &str) -> Result<Source, String> {
    if path == "-" {
        let bytes = read_bounded(std::io::stdin().lock(), "<stdin>")?;
        return Ok(Source {
            name: "<stdin>".into(),
            bytes,
        });
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{path}: cannot read: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{path}: is a directory"));
    }
    let bytes = read_bounded(file, path)?;
    Ok(Source {
        name: path.to_owned(),
        bytes,
    })
}

fn read_bounded(reader: impl Read, name: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "{name}: larger than {} MiB; refusing to read it",
            MAX_INPUT_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// Expands the arguments of `validate`: files as given, directories to their `*.yaml`,
/// `*.yml` and `*.json` files (recursively, sorted), `-` to standard input.
pub fn expand(args: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if arg != "-" && path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            if found.is_empty() {
                return Err(format!(
                    "{arg}: no .yaml, .yml or .json files in this directory"
                ));
            }
            found.sort();
            out.extend(found.into_iter().map(|p| p.display().to_string()));
        } else {
            out.push(arg.clone());
        }
        if out.len() > MAX_FILES {
            return Err(format!("more than {MAX_FILES} input files"));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
        if out.len() > MAX_FILES {
            return Err(format!("more than {MAX_FILES} input files"));
        }
    }
    Ok(())
}
