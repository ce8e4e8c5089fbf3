//! `docs/architecture.md` names every file of the crates it describes file by file, and only files
//! that exist: adding, moving or deleting a file without the page fails here.

use std::path::{Path, PathBuf};

/// The crates the page describes file by file, and the folders of each it lists.
const CRATES: [(&str, &[&str]); 4] = [
    ("crates/envoy-module", &["src", "examples"]),
    ("crates/transformations", &["src", "benches", "examples"]),
    ("crates/rustformations", &["src", "tests"]),
    ("crates/cli", &["src", "tests"]),
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The page's section on `krate`: from its heading to the next one.
fn section<'a>(page: &'a str, krate: &str) -> &'a str {
    let heading = format!("\n## `{krate}`\n");
    let start = page
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/architecture.md has no section on {krate}"))
        + heading.len();
    let end = page[start..]
        .find("\n## ")
        .map_or(page.len(), |n| start + n);
    &page[start..end]
}

fn page() -> String {
    let path = repository().join("docs/architecture.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, as a path relative to `root` with `/` separators.
fn files_under(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(root, &path, found);
        } else {
            let relative = path.strip_prefix(root).unwrap();
            found.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn every_source_file_is_in_the_architecture_page() {
    let page = page();
    for (krate, folders) in CRATES {
        let root = repository().join(krate);
        let mut files = Vec::new();
        for folder in folders {
            files_under(&root, &root.join(folder), &mut files);
        }
        assert!(files.len() > 5, "the walk found {krate}'s files: {files:?}");
        let section = section(&page, krate);
        let missing: Vec<&String> = files
            .iter()
            .filter(|file| !section.contains(&format!("`{file}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/architecture.md does not describe {missing:?} in its {krate} section"
        );
    }
}

#[test]
fn every_file_the_architecture_page_names_exists() {
    let page = page();
    for (krate, folders) in CRATES {
        let root = repository().join(krate);
        let named: Vec<&str> = section(&page, krate)
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|quoted| folders.iter().any(|f| quoted.starts_with(&format!("{f}/"))))
            .filter(|quoted| quoted.ends_with(".rs"))
            .collect();
        assert!(!named.is_empty(), "{krate}");
        let gone: Vec<&&str> = named.iter().filter(|f| !root.join(f).is_file()).collect();
        assert!(
            gone.is_empty(),
            "docs/architecture.md names {gone:?}, which {krate} no longer has"
        );
    }
}
