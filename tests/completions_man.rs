//! Shell completions and man pages, as the Debian package installs them: bash completes
//! tapflow's commands and flags, and every page renders without a groff warning.

mod common;

use std::process::Command;

use common::{have, scratch_dir, tapflow};

#[test]
fn bash_completes_commands_and_replay_flags() {
    let out = tapflow().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let dir = scratch_dir("completions");
    let script = dir.join("tapflow.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // As bash calls a completion function: the command, the word being completed and
    // the one before it, with COMP_WORDS and COMP_CWORD set.
    let complete = |words: &str, cword: usize| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _tapflow tapflow \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let commands = complete("tapflow re", 1);
    assert!(commands.lines().any(|l| l == "replay"), "{commands}");
    let flags = complete("tapflow replay --rec", 2);
    assert!(flags.lines().any(|l| l == "--records-json"), "{flags}");
}

#[test]
fn every_man_page_renders_cleanly_and_documents_replay() {
    if !have("groff") {
        eprintln!("skipped: groff is not installed (apt-get install groff-base)");
        return;
    }
    let dir = scratch_dir("manpages");
    let out = tapflow()
        .args(["manpage", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut pages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "tapflow.1",
        "tapflow-replay.1",
        "tapflow-run.1",
        "tapflow-check-config.1",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    for page in &pages {
        let render = Command::new("groff")
            .args(["-man", "-Tascii", "-ww", "-P-bcu"])
            .arg(page)
            .output()
            .unwrap();
        assert!(render.status.success(), "{}", page.display());
        let warnings = String::from_utf8_lossy(&render.stderr);
        assert!(warnings.is_empty(), "{}: {warnings}", page.display());
        if page.ends_with("tapflow-replay.1") {
            let text = String::from_utf8_lossy(&render.stdout);
            for flag in ["--config", "--records-json", "--collector", "--sample"] {
                assert!(text.contains(flag), "{flag} not in the replay page");
            }
        }
    }
}
