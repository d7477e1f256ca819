//! Fashion-MNIST as shipped: big-endian IDX files (`*-idx3-ubyte` images, `*-idx1-ubyte`
//! labels), gzipped or not. Every malformed file is an [`Error::Dataset`] naming it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Side of a Fashion-MNIST image.
pub(crate) const SIDE: usize = 28;
/// Pixels in one image.
pub const PIXELS: usize = SIDE * SIDE;

/// Fashion-MNIST's ten classes, in label order, as the dataset names them.
pub(crate) const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Short lowercase identifiers of the classes (the `class` field of exported phrases).
pub const CLASS_KEYS: [&str; 10] = [
    "tshirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Which half of the dataset; train and test share no images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (`train-*` files).
    Train,
    /// The test split (`t10k-*` files).
    Test,
}

impl Split {
    /// File-name prefix used by the original distribution.
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    /// Lowercase name, as the command line spells it (`train`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" | "t10k" => Ok(Split::Test),
            _ => Err(Error::InvalidArgument(format!(
                "unknown split {s:?}: expected \"train\" or \"test\""
            ))),
        }
    }
}

/// One split of Fashion-MNIST in memory: 28×28 grayscale images (row-major, 0 = black
/// background) and their labels (0..10, in the order of [`CLASS_KEYS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FashionMnist {
    /// The images, in file order.
    pub images: Vec<[u8; PIXELS]>,
    /// The label of each image, parallel to `images`.
    pub labels: Vec<u8>,
}

impl FashionMnist {
    /// Read `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` from `dir` (the layout of the
    /// Debian package `dataset-fashion-mnist` and of the original download).
    pub fn load(dir: &Path, split: Split) -> Result<Self> {
        let images = find(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
        let labels = find(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
        Self::load_files(&images, &labels)
    }

    /// Read an images file and a labels file (each gzipped or raw IDX).
    pub fn load_files(images_path: &Path, labels_path: &Path) -> Result<Self> {
        let bytes = read_maybe_gz(images_path)?;
        let (dims, body) = parse_idx(&bytes, images_path, IMAGES_MAGIC, 3)?;
        if dims[1] != SIDE || dims[2] != SIDE {
            return Err(bad(
                images_path,
                format!("images are {}×{}, expected {SIDE}×{SIDE}", dims[1], dims[2]),
            ));
        }
        let images: Vec<[u8; PIXELS]> = body
            .chunks_exact(PIXELS)
            .map(|c| c.try_into().expect("chunks_exact gives PIXELS bytes"))
            .collect();

        let bytes = read_maybe_gz(labels_path)?;
        let (dims, labels) = parse_idx(&bytes, labels_path, LABELS_MAGIC, 1)?;
        if dims[0] != images.len() {
            return Err(bad(
                labels_path,
                format!(
                    "{} labels for {} images in {}",
                    dims[0],
                    images.len(),
                    images_path.display()
                ),
            ));
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= CLASS_NAMES.len()) {
            return Err(bad(
                labels_path,
                format!("label {} of item {i} is not a class (0..10)", labels[i]),
            ));
        }
        Ok(FashionMnist {
            images,
            labels: labels.to_vec(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Indices of each class's items, in file order.
    pub(crate) fn indices_by_class(&self) -> [Vec<u32>; 10] {
        let mut out: [Vec<u32>; 10] = Default::default();
        for (i, &l) in self.labels.iter().enumerate() {
            out[l as usize].push(i as u32);
        }
        out
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// `stem.gz` if present, else `stem`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::MissingFile {
        path: gz,
        what: format!("Fashion-MNIST file {stem}[.gz]; install the Debian package dataset-fashion-mnist or pass its directory"),
    })
}

/// Whole file, gunzipped when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| bad(path, format!("cannot gunzip: {e}")))?;
    Ok(out)
}

/// Check an unsigned-byte IDX header (`magic` carries type 0x08 and `ndim`) and that the body
/// holds exactly the product of the dimensions.
fn parse_idx<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: u32,
    ndim: usize,
) -> Result<(Vec<usize>, &'a [u8])> {
    let truncated = |need: usize| {
        bad(
            path,
            format!("truncated IDX header: {} bytes, need {need}", bytes.len()),
        )
    };
    if bytes.len() < 4 {
        return Err(truncated(4));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    // Magic first: a wrong kind of file is the likelier mistake than a cut one.
    let got = word(0);
    if got != magic {
        return Err(bad(
            path,
            format!(
                "bad IDX magic 0x{got:08x}, expected 0x{magic:08x} (unsigned bytes, {ndim} dimension{})",
                if ndim == 1 { "" } else { "s" }
            ),
        ));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(header));
    }
    let dims: Vec<usize> = (1..=ndim).map(|i| word(i) as usize).collect();
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(path, format!("IDX dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() < want {
        return Err(bad(
            path,
            format!(
                "truncated: dimensions {dims:?} need {want} data bytes, the file has {}",
                body.len()
            ),
        ));
    }
    if body.len() > want {
        return Err(bad(
            path,
            format!(
                "{} trailing bytes after the {want} data bytes of dimensions {dims:?}",
                body.len() - want
            ),
        ));
    }
    Ok((dims, body))
}

/// Encode unsigned-byte IDX data (for tests and samples): `dims` then `data`, uncompressed.
pub fn write_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, 0x08, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
