//! `faultline completions bash|zsh|fish` and `faultline manpage` print scripts and a page that name
//! every subcommand; the bash script is valid bash (`bash -n`).

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline")).args(args).output().unwrap();
    assert!(out.status.success(), "faultline {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const SUBCOMMANDS: [&str; 6] = ["status", "incidents", "explain", "drain", "completions", "manpage"];

#[test]
fn completion_scripts_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(script.contains("--analyzer"), "{shell} completions lack --analyzer");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faultline.bash");
    std::fs::write(&path, run(&["completions", "bash"])).unwrap();
    if let Ok(st) = Command::new("bash").arg("-n").arg(&path).status() {
        assert!(st.success(), "bash -n rejects the bash completion script");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_faultline")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_page_is_roff_with_every_subcommand() {
    let page = run(&["manpage"]);
    assert!(page.contains(".TH faultline 1"), "{page:.300}");
    assert!(page.contains(&format!("faultline {}", env!("CARGO_PKG_VERSION"))), "{page:.300}");
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "the man page lacks {sub}");
    }
}
