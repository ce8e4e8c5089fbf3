//! The architecture page (`docs/architecture.md`) names every file of this crate, and only files
//! that exist.

use std::path::Path;

/// The folders of the crate whose files the page lists.
const FOLDERS: [&str; 3] = ["src", "benches", "examples"];

/// The page's section on this crate: from its heading to the next one.
fn section(page: &str) -> &str {
    let heading = "\n## `crates/transformations`\n";
    let start = page
        .find(heading)
        .expect("docs/architecture.md has a section on crates/transformations")
        + heading.len();
    let end = page[start..]
        .find("\n## ")
        .map_or(page.len(), |n| start + n);
    &page[start..end]
}

fn read_page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/architecture.md");
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
    let page = read_page();
    let section = section(&page);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for folder in FOLDERS {
        files_under(root, &root.join(folder), &mut files);
    }
    assert!(
        files.len() > 40,
        "the walk found the crate's files: {files:?}"
    );
    let missing: Vec<&String> = files
        .iter()
        .filter(|file| !section.contains(&format!("`{file}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not describe {missing:?} in its crates/transformations section"
    );
}

#[test]
fn every_file_the_architecture_page_names_exists() {
    let page = read_page();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let named: Vec<&str> = section(&page)
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| FOLDERS.iter().any(|f| quoted.starts_with(&format!("{f}/"))))
        .filter(|quoted| quoted.ends_with(".rs"))
        .collect();
    assert!(!named.is_empty());
    let gone: Vec<&&str> = named.iter().filter(|f| !root.join(f).is_file()).collect();
    assert!(
        gone.is_empty(),
        "docs/architecture.md names {gone:?}, which crates/transformations no longer has"
    );
}
