//! Replays the committed fuzz corpus, `fuzz/seeds/TARGET/`, through the
//! functions the fuzz targets call (src/fuzzing.rs): every input that ever
//! crashed a target stays a regression test of the normal `cargo test`.
//! `make fuzz` runs the targets themselves.

use std::path::Path;

use midge::fuzzing::TARGETS;

#[test]
fn every_seed_of_every_target_runs_to_its_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no seed", dir.display());
        for f in files {
            let data = std::fs::read(&f).expect("read seed");
            eprintln!("{name}: {}", f.display());
            run(&data);
        }
    }
}

#[test]
fn every_target_has_a_seed_folder_and_a_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in TARGETS {
        assert!(
            root.join("seeds").join(name).is_dir(),
            "no seeds for {name}"
        );
        let target = root.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&target).expect("fuzz target source");
        assert!(
            text.contains("midge::fuzzing::"),
            "{} calls no entry",
            target.display()
        );
    }
}
