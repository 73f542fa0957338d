//! The README's Redis recipe is shown as `rust,ignore`, because the README's other blocks are
//! compiled without features; it is `examples/shared_quota.rs`, which cargo compiles with
//! feature `redis`. This keeps the two the same text, so what the README shows compiles.

#[test]
fn the_readme_redis_recipe_is_examples_shared_quota_word_for_word() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/shared_quota.rs");
    let block = format!("```rust,ignore\n{example}```\n");
    assert!(
        readme.contains(&block),
        "README.md must show examples/shared_quota.rs verbatim in a ```rust,ignore block"
    );
}

#[test]
fn the_readme_has_no_hidden_lines_in_its_rust_blocks() {
    let readme = include_str!("../README.md");
    let mut in_rust = false;
    for (number, line) in readme.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            in_rust = !in_rust && info.starts_with("rust");
            continue;
        }
        assert!(
            !(in_rust && (line == "#" || line.starts_with("# "))),
            "README.md line {}: a hidden line, which GitHub and crates.io show as is: {line}",
            number + 1
        );
    }
}

/// The crate's rustdoc (docs.rs's first page) opens as the README does: the same first
/// paragraph, word for word.
#[test]
fn the_crate_docs_open_with_the_readme_opening() {
    let readme = include_str!("../README.md");
    let lib = include_str!("../src/lib.rs");
    let readme_opening: Vec<&str> = readme
        .lines()
        .skip_while(|line| line.starts_with('#') || line.is_empty())
        .take_while(|line| !line.is_empty())
        .collect();
    let lib_opening: Vec<&str> = lib
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .map(str::trim_start)
        .take_while(|line| !line.is_empty())
        .collect();
    assert!(
        !readme_opening.is_empty(),
        "the README has an opening paragraph"
    );
    assert_eq!(
        lib_opening, readme_opening,
        "src/lib.rs's crate docs must open with the README's first paragraph"
    );
}
