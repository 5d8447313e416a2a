//! `trustmesh demo` end to end: the built binary on the bundled noisy dataset.

use std::process::Command;

#[test]
fn demo_finds_and_lists_label_errors_in_the_bundled_dataset() {
    let out = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .arg("demo")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("178 rows checked"), "{stdout}");
    // 17 of the 178 labels were flipped: the demo must find a good share of them and list them.
    let line = stdout
        .lines()
        .find(|l| l.contains("rows have a likely label error"))
        .unwrap_or_else(|| panic!("no label-issue line in\n{stdout}"));
    let flagged: usize = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!((8..=40).contains(&flagged), "{line}");
    let listed = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("row_id"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .count();
    assert_eq!(listed, flagged.min(10), "{stdout}");
}
