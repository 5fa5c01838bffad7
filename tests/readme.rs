//! The README's walk-through, pasted into bash as a user would, against a fresh server: it runs
//! as written, and shows what it says it shows (search waits for indexing by itself).

mod common;

use std::process::Command;

#[test]
fn the_readme_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let section = readme.split("## A walk through the main flows").nth(1).expect("the walk-through's heading");
    let script =
        section.split("```sh\n").nth(1).and_then(|s| s.split("\n```").next()).expect("the walk-through's sh block");
    let default = "B=http://127.0.0.1:8080";
    assert!(script.contains(default), "the walk-through starts with {default}");
    let s = common::Server::start();
    let out =
        Command::new("bash").arg("-c").arg(script.replace(default, &format!("B={}", s.base))).output().expect("bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the walk-through failed: {stderr}\n{stdout}");
    assert!(stderr.is_empty(), "the walk-through wrote to stderr: {stderr}");
    assert!(!stdout.contains("\"error\""), "a step was refused:\n{stdout}");
    for shown in [
        "\"name\":\"Alice\"",
        "\"conversation_id\":\"s_",
        "\"text\":\"hello bob\"",
        "\"text\":\"hi all\"",
        "\"unread\":1",
        "\"name\":\"Rustaceans\"",
    ] {
        assert!(stdout.contains(shown), "the walk-through shows {shown}:\n{stdout}");
    }
}
