//! Every fault class has its runbook page in docs/runbooks/<class>.md, with the three parts a person
//! paged at night needs (what it means, how to confirm, what to do), and the index lists it. The
//! analyzer's alerts link there through `runbook_base` (`{class}` replaced).

use std::path::Path;

use faultline_proto::FaultClass;

#[test]
fn every_fault_class_has_a_runbook_page() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks");
    let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut problems = Vec::new();
    for class in FaultClass::ALL {
        let name = class.as_str();
        let page = dir.join(format!("{name}.md"));
        match std::fs::read_to_string(&page) {
            Err(e) => problems.push(format!("{}: {e}", page.display())),
            Ok(text) => {
                for part in ["**What it means.**", "**How to confirm.**", "**What to do.**"] {
                    if !text.contains(part) {
                        problems.push(format!("{name}.md has no {part}"));
                    }
                }
            }
        }
        if !index.contains(&format!("({name}.md)")) {
            problems.push(format!("README.md does not list {name}.md"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
