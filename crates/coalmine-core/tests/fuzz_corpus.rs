//! Replays the seed corpus of the `canary_loader` fuzz target (`fuzz/`) on
//! stable: each seed whole and cut at every character boundary. Loading
//! must give a Canary or problems, never panic.

use std::path::PathBuf;

#[test]
fn every_seed_loads_or_gives_problems_however_it_is_cut() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/canary_loader");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("a UTF-8 seed");
        count += 1;
        let _ = coalmine_core::validate::load(&text);
        for (cut, _) in text.char_indices().step_by(7) {
            let _ = coalmine_core::validate::load(&text[..cut]);
        }
    }
    assert!(count >= 10, "the corpus has {count} seeds");
}
