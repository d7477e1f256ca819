//! Memory-mapped safetensors reading. Each tensor is converted straight from the mapped bytes
//! into one owned `Vec<f32>` (dtype conversion, row slicing and transposition happen in that one
//! pass), so peak memory stays near one copy of the weights. Where the process installed
//! [`crate::io::mapped::MappingAllocator`], f32 tensors are not copied at all: their `Vec` is
//! the file's own (private, copy-on-write) mapping.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorInfo};

use crate::io::mapped::MappedFile;
use crate::model::params::Param;
use crate::model::{ClipConfig, ClipWeights};
use crate::{Error, Result};

struct Shard {
    path: PathBuf,
    file: File,
    mmap: Mmap,
    /// The same file mapped for zero-copy tensors, when the allocator allows it.
    zero_copy: Option<MappedFile>,
    /// Byte offset of the data section (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

/// One `.safetensors` file, or several shards listed by a `*.safetensors.index.json`.
pub(crate) struct TensorStore {
    /// The file named in "missing tensor" errors (the single file, or the index).
    path: PathBuf,
    shards: Vec<Shard>,
    /// tensor name -> shard index
    index: HashMap<String, usize>,
    /// Whether every value read is checked for NaN and infinities (see
    /// [`super::ValueCheck`]).
    pub check_values: bool,
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; a checkpoint rewritten while we read it is the caller's problem
    // (same contract as every safetensors loader).
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (n, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::BadTensor {
        path: path.to_path_buf(),
        name: "<header>".into(),
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    let zero_copy = MappedFile::map(&file, mmap.len());
    Ok(Shard {
        path: path.to_path_buf(),
        zero_copy,
        file,
        mmap,
        data_start: 8 + n,
        metadata,
    })
}

impl TensorStore {
    pub fn open(path: &Path) -> Result<Self> {
        let shard = open_shard(path)?;
        let index = shard
            .metadata
            .tensors()
            .into_keys()
            .map(|k| (k, 0))
            .collect();
        Ok(TensorStore {
            path: path.to_path_buf(),
            shards: vec![shard],
            index,
            check_values: true,
        })
    }

    /// `model.safetensors.index.json` (`{"weight_map": {name: file}}`), shards beside it.
    pub fn open_sharded(index_path: &Path) -> Result<Self> {
        let json = super::json::read_json(index_path)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::bad_config(
                    index_path,
                    "no `weight_map` object in the safetensors index",
                )
            })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<String> = Vec::new();
        let mut index = HashMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::bad_config(
                    index_path,
                    format!("weight_map[{name:?}] is not a file name"),
                )
            })?;
            let i = match files.iter().position(|f| f == file) {
                Some(i) => i,
                None => {
                    files.push(file.to_string());
                    files.len() - 1
                }
            };
            index.insert(name.clone(), i);
        }
        let mut shards = Vec::with_capacity(files.len());
        for f in &files {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(Error::MissingFile {
                    path: p,
                    what: format!("weight shard listed in {}", index_path.display()),
                });
            }
            shards.push(open_shard(&p)?);
        }
        // Trust the shard headers over the index: a name the index lists but its shard lacks is
        // reported as missing from that shard.
        for (name, &i) in &index {
            if shards[i].metadata.info(name).is_none() {
                return Err(Error::MissingTensor {
                    path: shards[i].path.clone(),
                    name: name.clone(),
                    expected: vec![],
                });
            }
        }
        Ok(TensorStore {
            path: index_path.to_path_buf(),
            shards,
            index,
            check_values: true,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let shard = &self.shards[*self.index.get(name)?];
        shard.metadata.info(name).map(|i| i.shape.as_slice())
    }

    fn raw(&self, name: &str, expected: &[usize]) -> Result<(&Shard, &TensorInfo, &[u8])> {
        let Some(&i) = self.index.get(name) else {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
            });
        };
        let shard = &self.shards[i];
        let info = shard
            .metadata
            .info(name)
            .expect("index built from metadata");
        if info.shape != expected {
            return Err(Error::TensorShape {
                path: shard.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                got: info.shape.clone(),
            });
        }
        let (a, b) = info.data_offsets;
        let bytes = &shard.mmap[shard.data_start + a..shard.data_start + b];
        Ok((shard, info, bytes))
    }

    /// Hand the mapped pages of `bytes` back to the page cache once they are copied, so the
    /// process holds one copy of the weights, not the mapping plus the copy.
    fn release(shard: &Shard, bytes: &[u8]) {
        #[cfg(unix)]
        {
            let offset = bytes.as_ptr() as usize - shard.mmap.as_ptr() as usize;
            // SAFETY: a read-only file mapping: dropped pages are re-read from the file if touched
            // again (e.g. Q, K and V rows of one packed tensor); no data can be lost.
            let _ = unsafe {
                shard.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    offset,
                    bytes.len(),
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (shard, bytes);
    }

    /// Elements `range` (in row-major element order) of tensor `name`, as f32.
    fn read_f32(&self, name: &str, expected: &[usize], range: Range<usize>) -> Result<Vec<f32>> {
        let (shard, info, bytes) = self.raw(name, expected)?;
        let bad = |msg: String| Error::BadTensor {
            path: shard.path.clone(),
            name: name.into(),
            msg,
        };
        let size = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            other => return Err(bad(format!("dtype {other:?} is not a floating-point type"))),
        };
        let bytes = &bytes[range.start * size..range.end * size];
        #[cfg(all(unix, target_endian = "little"))]
        if info.dtype == Dtype::F32 {
            let offset = bytes.as_ptr() as usize - shard.mmap.as_ptr() as usize;
            let mapped = shard.zero_copy.as_ref();
            if let Some(out) = mapped.and_then(|m| m.f32s(offset, range.len())) {
                return self.checked(out, range.start, bad);
            }
            let out = read_f32_direct(&shard.file, offset, range.len())
                .map_err(|e| bad(format!("cannot read: {e}")))?;
            return self.checked(out, range.start, bad);
        }
        let out: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            _ => unreachable!(),
        };
        Self::release(shard, bytes);
        self.checked(out, range.start, bad)
    }

    /// `out` through [`check_finite`] when values are checked.
    fn checked(
        &self,
        out: Vec<f32>,
        start: usize,
        bad: impl Fn(String) -> Error,
    ) -> Result<Vec<f32>> {
        match self.check_values {
            true => check_finite(out, start, bad),
            false => Ok(out),
        }
    }

    /// Elements of a tensor of shape `shape`, or an error when the count does not fit a
    /// `usize` (a config with absurd sizes asks for it; no file can hold such a tensor).
    fn elements(&self, name: &str, shape: &[usize]) -> Result<usize> {
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| Error::BadTensor {
                path: self.path.clone(),
                name: name.into(),
                msg: format!("the configuration asks for shape {shape:?}, too large to exist"),
            })
    }

    /// The whole tensor, checked against `expected`.
    pub fn tensor(&self, name: &str, expected: &[usize], device: &Device) -> Result<Tensor> {
        let n = self.elements(name, expected)?;
        let v = self.read_f32(name, expected, 0..n)?;
        Ok(Tensor::from_vec(v, expected, device)?)
    }

    /// Rows `rows` of a 2-D (or 1-D: elements) tensor of shape `expected`, e.g. Q/K/V out of a
    /// packed `in_proj_weight`.
    pub fn rows(
        &self,
        name: &str,
        expected: &[usize],
        rows: Range<usize>,
        device: &Device,
    ) -> Result<Tensor> {
        // The whole count first: it bounds every row range of the tensor.
        self.elements(name, expected)?;
        let row_len = self.elements(name, &expected[1..])?;
        let v = self.read_f32(name, expected, rows.start * row_len..rows.end * row_len)?;
        let mut shape = expected.to_vec();
        shape[0] = rows.len();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// A 2-D tensor `[a, b]` returned as its transpose `[b, a]` (contiguous).
    pub fn transposed(&self, name: &str, expected: [usize; 2], device: &Device) -> Result<Tensor> {
        let [a, b] = expected;
        let v = self.read_f32(name, &expected, 0..self.elements(name, &expected)?)?;
        let mut t = vec![0f32; a * b];
        for i in 0..a {
            for j in 0..b {
                t[j * a + i] = v[i * b + j];
            }
        }
        Ok(Tensor::from_vec(t, (b, a), device)?)
    }

    /// A scalar stored as shape `[]` or `[1]`.
    pub fn scalar(&self, name: &str) -> Result<f32> {
        let shape: &[usize] = match self.shape(name) {
            Some([1]) => &[1],
            _ => &[],
        };
        Ok(self.read_f32(name, shape, 0..1)?[0])
    }
}

fn check_finite(out: Vec<f32>, start: usize, bad: impl Fn(String) -> Error) -> Result<Vec<f32>> {
    // A branch-free pass first (vectorises; the scan covers every weight), the position only
    // when something is wrong.
    const EXP: u32 = 0x7f80_0000;
    let any_bad = out
        .iter()
        .fold(false, |acc, v| acc | (v.to_bits() & EXP == EXP));
    if !any_bad {
        return Ok(out);
    }
    match out.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(bad(format!(
            "non-finite value {} at flat index {}",
            out[i],
            start + i
        ))),
        None => Ok(out),
    }
}

/// `count` little-endian f32 values at byte `offset` of `file`, read straight into a fresh
/// buffer. Loading is dominated by faulting in fresh memory 4 KiB at a time, so the buffer asks
/// for transparent huge pages first (a hint; the kernel may decline).
#[cfg(all(unix, target_endian = "little"))]
fn read_f32_direct(file: &File, offset: usize, count: usize) -> std::io::Result<Vec<f32>> {
    use std::os::unix::fs::FileExt;
    // Large zeroed allocations come fresh from mmap, untouched: the advice applies before any
    // page is faulted in.
    let mut v = vec![0f32; count];
    const HUGE: usize = 1 << 21;
    let p = v.as_mut_ptr() as usize;
    let (start, end) = ((p + HUGE - 1) & !(HUGE - 1), (p + count * 4) & !(HUGE - 1));
    if end > start {
        // SAFETY: advice on a range inside our own allocation; it changes no contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
    // SAFETY: the f32 buffer viewed as bytes; every bit pattern is a valid f32.
    let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, count * 4) };
    file.read_exact_at(bytes, offset as u64)?;
    Ok(v)
}

/// IEEE half -> single, exact (every f16 is representable as f32).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: shift the mantissa up until its implicit bit appears.
            let mut e: u32 = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

/// Where a parameter is stored in a checkpoint format's files.
pub(crate) enum Source {
    /// A tensor of the parameter's shape.
    Tensor(String),
    /// Part `index` (Q, K, V = 0, 1, 2) of a packed attention projection (`in_proj_weight`
    /// `[3w, w]`, `in_proj_bias` `[3w]`), by rows.
    Packed(String, usize),
    /// A `[width, embed]` matrix used as `x @ P`: the transpose of the parameter.
    Transposed(String),
    /// The parameter behind this many leading axes of size 1 (SigLIP's probe `[1, 1, width]`).
    UnitAxes(String, usize),
}

impl TensorStore {
    /// Every parameter of a model of geometry `cfg`, each from where the format's table
    /// `source` says, checked against its shape.
    pub fn read_weights(
        &self,
        cfg: &ClipConfig,
        source: &(dyn Fn(Param) -> Source + Sync),
        device: &Device,
    ) -> Result<ClipWeights> {
        let read = |p: Param| {
            let shape = p.shape(cfg);
            match source(p) {
                Source::Tensor(name) => self.tensor(&name, &shape, device),
                Source::Packed(name, i) => {
                    let n = shape[0];
                    let mut packed = shape.clone();
                    packed[0] = n.checked_mul(3).ok_or_else(|| Error::BadTensor {
                        path: self.path.clone(),
                        name: name.clone(),
                        msg: format!("the configuration asks for 3 x {n} rows, too many to exist"),
                    })?;
                    self.rows(&name, &packed, i * n..(i + 1) * n, device)
                }
                Source::Transposed(name) => self.transposed(&name, [shape[1], shape[0]], device),
                Source::UnitAxes(name, k) => {
                    let stored: Vec<usize> = std::iter::repeat_n(1, k)
                        .chain(shape.iter().copied())
                        .collect();
                    Ok(self.tensor(&name, &stored, device)?.reshape(shape)?)
                }
            }
        };
        let logit_bias = match self.contains("logit_bias") {
            true => Some(self.scalar("logit_bias")?),
            false => None,
        };
        ClipWeights::from_params(cfg, &read, self.scalar("logit_scale")?, logit_bias)
    }
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }
}
