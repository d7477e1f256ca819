//! Shared by the integration tests: committed fixtures as loadable directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A JSON fixture file, parsed (a missing or bad file names itself).
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A fixture checkpoint as a directory pairlens can load: large open_clip weights are committed
/// gzipped, so such directories are copied into a temporary directory with every `.gz` expanded.
pub struct FixtureDir {
    pub path: PathBuf,
    temp: bool,
}

impl FixtureDir {
    pub fn new(name: &str) -> Self {
        let src = fixtures().join("models").join(name);
        let has_gz = std::fs::read_dir(&src)
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
            .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "gz"));
        if !has_gz {
            return FixtureDir {
                path: src,
                temp: false,
            };
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dst = std::env::temp_dir().join(format!(
            "pairlens-fixture-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).unwrap();
        copy_expanding(&src, &dst);
        FixtureDir {
            path: dst,
            temp: true,
        }
    }
}

impl Drop for FixtureDir {
    fn drop(&mut self) {
        if self.temp {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Copy every file of `src` into `dst`, expanding `*.gz` files.
pub fn copy_expanding(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap();
        if let Some(stem) = file.strip_suffix(".gz") {
            let mut d = flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap());
            let mut out = std::fs::File::create(dst.join(stem)).unwrap();
            std::io::copy(&mut d, &mut out).unwrap();
        } else {
            std::fs::copy(&p, dst.join(file)).unwrap();
        }
    }
}
