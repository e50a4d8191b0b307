//! Replays the seed corpus of the `h1_response` fuzz target (`fuzz/`) on
//! stable: each seed as it is, as a `GET` and a `HEAD` answer arriving a
//! byte at a time, in a few piece sizes, and cut at many lengths. The
//! parser and decoder must not panic or hang.

use std::path::PathBuf;

use coalmine_proxy::h1::decode_for_fuzzing;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/h1_response");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).expect("a readable seed");
            (path.display().to_string(), data)
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_seed_decodes_without_panicking_however_it_is_split_or_cut() {
    let seeds = seeds();
    assert!(seeds.len() >= 40, "the corpus has {} seeds", seeds.len());
    for (_, data) in &seeds {
        let Some((_, rest)) = data.split_first() else {
            continue;
        };
        // HEAD or not (bit 0) in pieces of 1, 3, 64 and 127 bytes.
        for first in [0u8, 1, 6, 7, 128, 129, 254, 255] {
            let mut input = vec![first];
            input.extend_from_slice(rest);
            decode_for_fuzzing(&input);
        }
        for cut in (0..data.len()).step_by((data.len() / 40).max(1)) {
            decode_for_fuzzing(&data[..cut]);
        }
        decode_for_fuzzing(data);
    }
}
