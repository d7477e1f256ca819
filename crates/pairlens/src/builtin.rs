//! The built-in model: a small CLIP trained on Fashion-MNIST mosaics (`pairlens train`), compiled
//! into the binary so that every command works with no `--model` and no network.
//!
//! The checkpoint loader memory-maps `model.safetensors` and reads the other files by path, so
//! the embedded bytes are written once into a per-user cache directory named after their content
//! hash and loaded from there like any other Hugging Face checkpoint. The directory is filled
//! under a temporary name and renamed into place, so concurrent processes never see a half
//! written model; on reuse every file's size is checked, and a damaged copy is replaced.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;

use crate::io::checkpoint::{self, LoadedModel};
use crate::{Error, Result};

/// The checkpoint files, in the layout [`checkpoint::load`] reads (Hugging Face `CLIPModel`).
const FILES: [(&str, &[u8]); 4] = [
    (
        "config.json",
        include_bytes!("../assets/builtin/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../assets/builtin/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../assets/builtin/tokenizer.json"),
    ),
    (
        "preprocessor_config.json",
        include_bytes!("../assets/builtin/preprocessor_config.json"),
    ),
];

/// What users see in place of a directory name.
pub const NAME: &str = "the built-in Fashion-MNIST model";

/// Blocks in the built-in model's (text, image) towers, read from its embedded config without
/// loading it: for help texts, which must not touch the cache.
pub fn layers() -> (usize, usize) {
    let config: serde_json::Value = serde_json::from_slice(FILES[0].1).unwrap_or_default();
    let blocks = |tower: &str| {
        config[tower]["num_hidden_layers"]
            .as_u64()
            .map_or(0, |n| n as usize)
    };
    (blocks("text_config"), blocks("vision_config"))
}

/// 16 hex digits of a 64-bit FNV-1a hash over the file names, sizes and bytes: the cache key,
/// so a binary with other weights never reuses a stale copy.
pub fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (name, bytes) in FILES {
            eat(name.as_bytes());
            eat(&(bytes.len() as u64).to_le_bytes());
            eat(bytes);
        }
        format!("{h:016x}")
    })
}

/// Where the cache may live, in order: `$XDG_CACHE_HOME` (else `~/.cache`), then the system temp
/// directory for machines whose home is read-only or missing.
fn cache_roots() -> Vec<PathBuf> {
    let mut roots = vec![preferred_root()];
    let tmp = std::env::temp_dir();
    if !roots.contains(&tmp) {
        roots.push(tmp);
    }
    roots
}

fn preferred_root() -> PathBuf {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(p) = absolute(std::env::var_os("XDG_CACHE_HOME")) {
        return p;
    }
    if let Some(home) = absolute(std::env::var_os("HOME")) {
        return home.join(".cache");
    }
    std::env::temp_dir()
}

/// The built-in checkpoint as a directory on disk, written on first use into the first of
/// [`cache_roots`] that can hold it.
fn model_dir() -> Result<PathBuf> {
    let roots = cache_roots();
    let mut failures = Vec::new();
    for root in &roots {
        match model_dir_in(root) {
            Ok(dir) => return Ok(dir),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(Error::Cache {
        path: roots[0].clone(),
        msg: format!(
            "no writable cache directory for the built-in model (set XDG_CACHE_HOME to one): {}",
            failures.join("; ")
        ),
    })
}

/// [`model_dir`] under another cache root: `<root>/pairlens-builtin-<hash>`.
fn model_dir_in(root: &Path) -> Result<PathBuf> {
    let dir = root.join(format!("pairlens-builtin-{}", hash()));
    if is_complete(&dir) {
        return Ok(dir);
    }
    let fail = |path: &Path, what: &str, e: std::io::Error| Error::Cache {
        path: path.to_path_buf(),
        msg: format!("{what}: {e}"),
    };
    std::fs::create_dir_all(root)
        .map_err(|e| fail(root, "cannot create the cache directory", e))?;
    let tmp = unique(root, "tmp");
    let written =
        write_files(&tmp).map_err(|(p, e)| fail(&p, "cannot write the built-in model", e));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // A damaged copy (a crash before the data reached the disk, a file edited by hand) is moved
    // aside first; a rename onto a non-empty directory fails, which is how a racing writer that
    // finished first is noticed.
    if dir.exists() && !is_complete(&dir) {
        let stale = unique(root, "stale");
        if std::fs::rename(&dir, &stale).is_ok() {
            let _ = std::fs::remove_dir_all(&stale);
        }
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            if is_complete(&dir) {
                Ok(dir) // another process got there first
            } else {
                Err(fail(&dir, "cannot move the built-in model into place", e))
            }
        }
    }
}

/// Load the built-in model (materialising it first if needed).
pub fn load(device: &Device) -> Result<LoadedModel> {
    checkpoint::load(&model_dir()?, device)
}

/// The built-in model's directory, opened (materialising it first if needed), for loading in
/// parts ([`checkpoint::Checkpoint`]).
pub(crate) fn checkpoint() -> Result<checkpoint::Checkpoint> {
    checkpoint::Checkpoint::open(&model_dir()?)
}

/// Every file present with its embedded size.
fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|(name, bytes)| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    })
}

/// A sibling name no other process or thread uses: `.pairlens-builtin-<hash>.<what>-<pid>-<n>`.
fn unique(root: &Path, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    root.join(format!(
        ".pairlens-builtin-{}.{what}-{}-{n}-{nanos}",
        hash(),
        std::process::id()
    ))
}

fn write_files(dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    std::fs::create_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for (name, bytes) in FILES {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| (path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pairlens-builtin-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn layers_match_the_loaded_model() {
        let loaded = load(&Device::Cpu).unwrap();
        let (text, image) = layers();
        assert_eq!(text, loaded.model.text.config.transformer.layers);
        assert_eq!(image, loaded.model.vision.config.transformer.layers);
        assert!(text > 0 && image > 0);
    }

    #[test]
    fn materialises_once_and_repairs() {
        let r = root("repair");
        let dir = model_dir_in(&r).unwrap();
        assert!(dir.ends_with(format!("pairlens-builtin-{}", hash())));
        for (name, bytes) in FILES {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
        // Reuse: same directory, nothing else left behind.
        assert_eq!(model_dir_in(&r).unwrap(), dir);
        assert_eq!(std::fs::read_dir(&r).unwrap().count(), 1);
        // A truncated file is noticed and the copy replaced.
        std::fs::write(dir.join("model.safetensors"), b"x").unwrap();
        assert_eq!(model_dir_in(&r).unwrap(), dir);
        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            FILES[1].1
        );
        assert_eq!(std::fs::read_dir(&r).unwrap().count(), 1);
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn concurrent_writers_agree() {
        let r = root("race");
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| model_dir_in(&r).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(dirs.iter().all(|d| d == &dirs[0]));
        assert!(is_complete(&dirs[0]));
        assert_eq!(
            std::fs::read_dir(&r).unwrap().count(),
            1,
            "temporary directories left behind"
        );
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn unwritable_cache_is_a_clear_error() {
        // A regular file where the cache root should be: no directory can be made under it.
        let f = root("file");
        std::fs::write(&f, b"not a directory").unwrap();
        let err = model_dir_in(&f.join("sub")).unwrap_err().to_string();
        assert!(
            err.contains(&f.display().to_string()) && err.contains("cannot create"),
            "{err}"
        );
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn loads() {
        let m = checkpoint::load(&model_dir_in(&root("load")).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(m.format, checkpoint::CheckpointFormat::Hf);
        let _ = std::fs::remove_dir_all(root("load"));
    }
}
