//! `pairlens._pairlens`: the native half of the Python package `pairlens` (PyO3, abi3).
//!
//! A thin layer over [`pairlens::Explainer`]: images come in as a path, a `PIL.Image` or a
//! numpy `uint8` array and are decoded and preprocessed by pairlens itself, so the numbers equal
//! the CLI's; every computation releases the GIL; every [`pairlens::Error`] becomes a Python
//! exception carrying the library's message (the text the CLI prints after `error: `). The
//! Python side (`python/pairlens/__init__.py`) re-exports what is defined here; the stubs in
//! `python/pairlens/__init__.pyi` document it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArrayDyn, PyUntypedArray};
use numpy::{PyArrayDescrMethods, PyUntypedArrayMethods};
use pairlens::attribution::{export, Mode, Settings};
use pairlens::io::image::{Mode as PixelMode, PilMode};
use pairlens::{DecodedImage, Geometry, ModelSource};
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError, PyOSError,
    PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

/// The package's exception classes, made once at import.
struct Errors {
    base: Py<PyType>,
    input: Py<PyType>,
    model: Py<PyType>,
    missing: Py<PyType>,
    file: Py<PyType>,
    compute: Py<PyType>,
}

static ERRORS: GILOnceCell<Errors> = GILOnceCell::new();

/// `class name(*bases)` in module `pairlens`, with a docstring.
fn new_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: &[Bound<'py, PyType>],
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let dict = PyDict::new(py);
    dict.set_item("__module__", "pairlens")?;
    dict.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    py.get_type::<PyType>()
        .call1((name, bases, dict))?
        .downcast_into::<PyType>()
        .map_err(Into::into)
}

fn make_errors(py: Python<'_>) -> PyResult<Errors> {
    let base = new_class(
        py,
        "Error",
        &[py.get_type::<PyException>()],
        "Base class of every error pairlens raises; str(e) is the message the CLI prints.",
    )?;
    let input = new_class(
        py,
        "InputError",
        &[base.clone(), py.get_type::<PyValueError>()],
        "A bad argument or input: a layer out of range, an empty or too long caption, an \
         image that cannot be read, a span or box outside the explanation.",
    )?;
    let model = new_class(
        py,
        "ModelError",
        &[base.clone(), py.get_type::<PyValueError>()],
        "A checkpoint pairlens cannot use: not a checkpoint directory, a bad config, a \
         missing or misshapen tensor, a broken tokenizer.",
    )?;
    let missing = new_class(
        py,
        "MissingFileError",
        &[base.clone(), py.get_type::<PyFileNotFoundError>()],
        "A file or directory the input needs does not exist.",
    )?;
    let file = new_class(
        py,
        "FileError",
        &[base.clone(), py.get_type::<PyOSError>()],
        "Reading or writing a file failed at the operating-system level.",
    )?;
    let compute = new_class(
        py,
        "ComputeError",
        &[base.clone(), py.get_type::<PyRuntimeError>()],
        "A computation failed: a NaN or infinite result (broken weights or input), or a \
         tensor operation error.",
    )?;
    Ok(Errors {
        base: base.unbind(),
        input: input.unbind(),
        model: model.unbind(),
        missing: missing.unbind(),
        file: file.unbind(),
        compute: compute.unbind(),
    })
}

/// A library error as the Python exception of its kind; `context` is prepended as the CLI
/// does (`loading built-in model: …`).
fn py_err(e: pairlens::Error, context: Option<&str>) -> PyErr {
    use pairlens::Error as E;
    let msg = match context {
        Some(c) => format!("{c}: {e}"),
        None => e.to_string(),
    };
    Python::with_gil(|py| {
        let errors = match ERRORS.get_or_try_init(py, || make_errors(py)) {
            Ok(errors) => errors,
            Err(err) => return err,
        };
        let class = match &e {
            E::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => &errors.missing,
            E::MissingFile { .. } => &errors.missing,
            E::UnknownCheckpoint { dir, .. } if !dir.exists() => &errors.missing,
            E::Io { .. } | E::Cache { .. } => &errors.file,
            E::UnknownCheckpoint { .. }
            | E::BadConfig { .. }
            | E::MissingTensor { .. }
            | E::TensorShape { .. }
            | E::BadTensor { .. }
            | E::Tokenizer(_) => &errors.model,
            E::Caption { .. }
            | E::Image { .. }
            | E::ImageTooLarge { .. }
            | E::InvalidArgument(_)
            | E::Dataset { .. } => &errors.input,
            E::NonFinite(_) | E::Cancelled | E::Candle(_) => &errors.compute,
        };
        match class.bind(py).call1((msg,)) {
            Ok(value) => PyErr::from_value(value),
            Err(err) => err,
        }
    })
}

/// [`pairlens::Error::InvalidArgument`] as a Python exception.
fn invalid(msg: String) -> PyErr {
    py_err(pairlens::Error::InvalidArgument(msg), None)
}

/// Library results in Python.
trait OrRaise<T> {
    /// The value, or the error as the Python exception of its kind.
    fn or_raise(self) -> PyResult<T>;
    /// The same, the message prefixed with `context: `.
    fn or_raise_in(self, context: &str) -> PyResult<T>;
}

impl<T> OrRaise<T> for pairlens::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(|e| py_err(e, None))
    }
    fn or_raise_in(self, context: &str) -> PyResult<T> {
        self.map_err(|e| py_err(e, Some(context)))
    }
}

/// A caption too long for the context, with the argument that truncates it (the CLI names
/// `--truncate`).
fn truncate_hint<T>(result: pairlens::Result<T>) -> PyResult<T> {
    result.map_err(|e| match e {
        pairlens::Error::Caption { caption, msg } if msg.contains("exceed the context length") => {
            let msg = format!("{msg} (truncate=True does that)");
            py_err(pairlens::Error::Caption { caption, msg }, None)
        }
        e => py_err(e, None),
    })
}

/// A non-negative index argument (a layer, steps), refused with `ValueError` when negative.
fn index(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| invalid(format!("{name} {value}: must be ≥ 0")))
}

/// An image as given from Python, read into what pairlens decodes files to.
struct Image {
    decoded: DecodedImage,
    /// The file, when the image was given as a path.
    path: Option<PathBuf>,
}

/// Reads an image argument: a path (str / os.PathLike), a `PIL.Image.Image`, or a numpy
/// `uint8` array `[H, W]`, `[H, W, 1|2|3|4]` (L, LA, RGB, RGBA). Files are decoded with the
/// GIL released.
fn read_image(py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Image> {
    if let Ok(array) = image.downcast::<PyUntypedArray>() {
        return Ok(Image {
            decoded: from_array(array)?,
            path: None,
        });
    }
    if is_pil_image(py, image)? {
        return Ok(Image {
            decoded: from_pil(image)?,
            path: None,
        });
    }
    if image.is_instance_of::<pyo3::types::PyString>() || image.hasattr("__fspath__")? {
        let path: PathBuf = image.extract()?;
        let decoded = py
            .allow_threads(|| pairlens::decode_file(&path))
            .or_raise()?;
        return Ok(Image {
            decoded,
            path: Some(path),
        });
    }
    Err(PyTypeError::new_err(format!(
        "image: expected a path, a PIL.Image.Image, a numpy uint8 array [H, W, 3] or an \
         ImageSide, got {}",
        image.get_type().name()?
    )))
}

/// Whether `ob` is a `PIL.Image.Image` (without importing PIL when the caller has not).
fn is_pil_image(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<bool> {
    let modules = py.import("sys")?.getattr("modules")?;
    match modules.get_item("PIL.Image") {
        Ok(module) => ob.is_instance(&module.getattr("Image")?),
        Err(_) => Ok(false),
    }
}

/// A numpy array as a decoded image: `uint8`, `[H, W]` or `[H, W, C]` with C = 1 (L), 2 (LA),
/// 3 (RGB) or 4 (RGBA).
fn from_array(array: &Bound<'_, PyUntypedArray>) -> PyResult<DecodedImage> {
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<u8>(array.py())) {
        return Err(PyTypeError::new_err(format!(
            "image array: expected dtype uint8 (8-bit samples), got {}",
            dtype.str()?
        )));
    }
    let shape = array.shape().to_vec();
    let mode = match shape.as_slice() {
        [_, _] | [_, _, 1] => PixelMode::L,
        [_, _, 2] => PixelMode::LA,
        [_, _, 3] => PixelMode::Rgb,
        [_, _, 4] => PixelMode::Rgba,
        _ => {
            return Err(invalid(format!(
                "image array of shape {shape:?}: expected [height, width] or [height, width, \
                 channels] with 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels"
            )))
        }
    };
    let array: PyReadonlyArrayDyn<'_, u8> = array.extract()?;
    // Logical (C) order whatever the strides.
    let data: Vec<u8> = array.as_array().iter().copied().collect();
    DecodedImage::from_raw(shape[1], shape[0], mode, data).or_raise()
}

/// A `PIL.Image` as pairlens' decoder would have read it: L, LA, RGB and RGBA as stored; "1"
/// as L, "P" as RGB, both keeping their Pillow mode (which decides the resampling); a
/// `transparency` entry as per-pixel alpha; 16-bit and float modes refused (as the decoder
/// refuses 16-bit PNGs); other modes (CMYK, YCbCr, …) converted to RGB.
fn from_pil(image: &Bound<'_, PyAny>) -> PyResult<DecodedImage> {
    let mode: String = image.getattr("mode")?.extract()?;
    let (width, height): (usize, usize) = image.getattr("size")?.extract()?;
    let convert = |to: &str| image.call_method1("convert", (to,));
    let (source, layout, pil_mode) = match mode.as_str() {
        "L" => (image.clone(), PixelMode::L, PilMode::L),
        "LA" => (image.clone(), PixelMode::LA, PilMode::LA),
        "RGB" => (image.clone(), PixelMode::Rgb, PilMode::Rgb),
        "RGBA" => (image.clone(), PixelMode::Rgba, PilMode::Rgba),
        "1" => (convert("L")?, PixelMode::L, PilMode::One),
        "P" => (convert("RGB")?, PixelMode::Rgb, PilMode::P),
        "PA" | "La" | "RGBa" => (convert("RGBA")?, PixelMode::Rgba, PilMode::Rgba),
        m if m.starts_with('I') || m.starts_with('F') => {
            return Err(invalid(format!(
                "PIL image of mode {m} is not supported: CLIP preprocessing's RGB conversion \
                 turns every value above 255 white; convert it to 8-bit first"
            )))
        }
        _ => (convert("RGB")?, PixelMode::Rgb, PilMode::Rgb),
    };
    let bytes = source.call_method0("tobytes")?;
    let data = bytes.downcast::<PyBytes>()?.as_bytes().to_vec();
    let mut decoded = DecodedImage::from_raw(width, height, layout, data).or_raise()?;
    decoded.pil_mode = pil_mode;
    let info = image.getattr("info")?;
    let has_transparency = info.contains("transparency").unwrap_or(false);
    if has_transparency && matches!(layout, PixelMode::L | PixelMode::Rgb) {
        let rgba = convert("RGBA")?.call_method0("tobytes")?;
        let rgba = rgba.downcast::<PyBytes>()?.as_bytes();
        decoded.transparency = Some(rgba.chunks_exact(4).map(|p| p[3]).collect());
    }
    Ok(decoded)
}

/// (image embedding, text embedding) as numpy arrays.
type EmbeddingPair<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<f32>>);

/// Progress for a Python callback `progress(label, done, total)`, and the way back: an
/// exception from the callback, or a signal such as Ctrl-C (KeyboardInterrupt, checked at every
/// report), stops the computation and is raised in place of its result.
struct PyProgress {
    callback: Option<Py<PyAny>>,
    label: String,
    total: u64,
    done: u64,
    error: Option<PyErr>,
}

impl PyProgress {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        PyProgress {
            callback,
            label: String::new(),
            total: 0,
            done: 0,
            error: None,
        }
    }

    /// Calls the callback (with the GIL, from the computing thread) and checks for signals.
    fn report(&mut self) {
        if self.error.is_some() {
            return;
        }
        let result = Python::with_gil(|py| {
            py.check_signals()?;
            if let Some(callback) = &self.callback {
                callback.call1(py, (self.label.as_str(), self.done, self.total))?;
            }
            Ok::<_, PyErr>(())
        });
        self.error = result.err();
    }

    /// `result`, unless the callback raised or a signal arrived: then that exception.
    fn finish<T>(self, result: pairlens::Result<T>) -> PyResult<pairlens::Result<T>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }
}

impl pairlens::Progress for PyProgress {
    fn start(&mut self, label: &str, total: u64) {
        self.label = label.to_string();
        self.total = total;
        self.done = 0;
        self.report();
    }

    fn advance(&mut self, done: u64) {
        self.done += done;
        self.report();
    }

    fn cancelled(&self) -> bool {
        self.error.is_some()
    }
}

/// A float vector as a numpy array.
fn vector<'py>(py: Python<'py>, v: Vec<f32>) -> Bound<'py, PyArray1<f32>> {
    v.into_pyarray(py)
}

/// Row-major floats as a numpy array `[rows, cols]`.
fn matrix<'py>(
    py: Python<'py>,
    rows: usize,
    cols: usize,
    v: Vec<f32>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let a = Array2::from_shape_vec((rows, cols), v)
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// A CLIP-style dual encoder opened for explaining (see the stubs for the Python docs).
#[pyclass(module = "pairlens", frozen)]
struct Explainer {
    inner: Arc<pairlens::Explainer>,
    /// The model as JSON outputs name it: its directory as given, or "built-in".
    json_name: String,
}

/// The image half of explanations, computed once and reusable for any number of captions.
#[pyclass(module = "pairlens", frozen)]
struct ImageSide {
    side: pairlens::ImageSide,
    geometry: Geometry,
    /// The explainer it was computed by (an image side only fits its own model).
    owner: Arc<pairlens::Explainer>,
    source: Source,
}

/// One caption explained against one image.
#[pyclass(module = "pairlens", frozen)]
struct Explanation {
    inner: pairlens::Explanation,
    geometry: Geometry,
    caption: String,
    model: String,
    source: Source,
}

/// The image an explanation is about: its pixels (for the HTML report) and, when it was read
/// from a file, that file. Shared by every explanation of the image.
#[derive(Clone)]
struct Source {
    decoded: Arc<DecodedImage>,
    path: Option<PathBuf>,
}

/// The settings of an explain call: the model's defaults (last blocks, N = 10, exclip) with
/// the arguments given, checked against the model.
fn settings(
    ex: &pairlens::Explainer,
    text_layer: Option<i64>,
    image_layer: Option<i64>,
    steps: Option<i64>,
    mode: Option<&str>,
) -> PyResult<Settings> {
    let defaults = ex.default_settings();
    overridden(ex, defaults, text_layer, image_layer, steps, mode)
}

/// `s` with the arguments given laid over it, checked against the model.
fn overridden(
    ex: &pairlens::Explainer,
    mut s: Settings,
    text_layer: Option<i64>,
    image_layer: Option<i64>,
    steps: Option<i64>,
    mode: Option<&str>,
) -> PyResult<Settings> {
    if let Some(l) = text_layer {
        s.text_layer = index("text_layer", l)?;
    }
    if let Some(l) = image_layer {
        s.image_layer = index("image_layer", l)?;
    }
    if let Some(n) = steps {
        s.steps = index("steps", n)?;
    }
    if let Some(m) = mode {
        s.mode = m.parse::<Mode>().or_raise()?;
    }
    ex.check_settings(&s).or_raise()?;
    Ok(s)
}

/// Captions as a list of strings (a single string is refused: it would be read letter by
/// letter).
fn captions_arg(captions: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if captions.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(
            "captions: expected a list of strings, got a single string (wrap it in a list)",
        ));
    }
    let captions: Vec<String> = captions.extract()?;
    if captions.is_empty() {
        return Err(invalid("captions: give at least one caption".into()));
    }
    Ok(captions)
}

#[pymethods]
impl Explainer {
    /// Opens `model` (a Hugging Face CLIP or OpenCLIP directory; None: the built-in model).
    #[new]
    #[pyo3(signature = (model = None, device = "cpu"))]
    fn new(py: Python<'_>, model: Option<PathBuf>, device: &str) -> PyResult<Self> {
        let device = pairlens::parse_device(device).or_raise()?;
        let source = ModelSource::from_option(model.as_deref());
        let json_name = match &model {
            Some(dir) => dir.display().to_string(),
            None => "built-in".to_string(),
        };
        let context = format!("loading {source}");
        let inner = py
            .allow_threads(|| pairlens::Explainer::open(source, &device))
            .or_raise_in(&context)?;
        Ok(Explainer {
            inner: Arc::new(inner),
            json_name,
        })
    }

    /// Explains each caption against `image`.
    #[pyo3(signature = (image, captions, *, text_layer = None, image_layer = None, steps = None,
                        mode = None, truncate = false, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        captions: &Bound<'_, PyAny>,
        text_layer: Option<i64>,
        image_layer: Option<i64>,
        steps: Option<i64>,
        mode: Option<&str>,
        truncate: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Vec<Explanation>> {
        let mut progress = PyProgress::new(progress);
        let captions = captions_arg(captions)?;
        let ex = &*self.inner;
        if let Ok(side) = image.downcast::<ImageSide>() {
            let side = side.get();
            if !Arc::ptr_eq(&side.owner, &self.inner) {
                return Err(invalid(
                    "this image side was computed by another Explainer: an image side only \
                     fits the model that computed it"
                        .into(),
                ));
            }
            let had = side.side.settings();
            let s = overridden(ex, had.clone(), text_layer, image_layer, steps, mode)?;
            let reused = side.side.with_settings(&s).or_raise()?;
            let explanations = py.allow_threads(|| {
                let encoded = captions
                    .iter()
                    .map(|c| ex.encode(c, truncate))
                    .collect::<pairlens::Result<Vec<_>>>()?;
                ex.explain_encoded(&reused, &encoded, &mut progress)
            });
            let explanations = truncate_hint(progress.finish(explanations)?)?;
            return Ok(self.wrap(explanations, &captions, side.geometry, &side.source));
        }
        let s = settings(ex, text_layer, image_layer, steps, mode)?;
        let image = read_image(py, image)?;
        let context = image
            .path
            .as_ref()
            .map(|p| format!("preprocessing {}", p.display()));
        ex.preprocess_config()
            .check_image(&image.decoded)
            .map_err(|e| py_err(e, context.as_deref()))?;
        let explained = py.allow_threads(|| {
            ex.explain_image(&image.decoded, &captions, truncate, &s, &mut progress)
        });
        let explained = truncate_hint(progress.finish(explained)?)?;
        let geometry = explained.input.geometry;
        let source = Source {
            decoded: Arc::new(image.decoded),
            path: image.path,
        };
        Ok(self.wrap(explained.explanations, &captions, geometry, &source))
    }

    /// The image side of `image`, reusable with `explain` for any number of captions.
    #[pyo3(signature = (image, *, image_layer = None, steps = None, mode = None, progress = None))]
    fn image(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        image_layer: Option<i64>,
        steps: Option<i64>,
        mode: Option<&str>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<ImageSide> {
        let mut progress = PyProgress::new(progress);
        let ex = &*self.inner;
        let s = settings(ex, None, image_layer, steps, mode)?;
        let image = read_image(py, image)?;
        let context = image
            .path
            .as_ref()
            .map(|p| format!("preprocessing {}", p.display()));
        ex.preprocess_config()
            .check_image(&image.decoded)
            .map_err(|e| py_err(e, context.as_deref()))?;
        let input = py
            .allow_threads(|| ex.preprocess(&image.decoded))
            .map_err(|e| py_err(e, context.as_deref()))?;
        let side = py.allow_threads(|| ex.image_with_progress(&input.pixels, &s, &mut progress));
        let side = progress.finish(side)?.or_raise()?;
        Ok(ImageSide {
            side,
            geometry: input.geometry,
            owner: self.inner.clone(),
            source: Source {
                decoded: Arc::new(image.decoded),
                path: image.path,
            },
        })
    }

    /// The image and text embeddings (unnormalised) of one image and one caption.
    #[pyo3(signature = (image, caption, *, truncate = false))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        caption: &str,
        truncate: bool,
    ) -> PyResult<EmbeddingPair<'py>> {
        let ex = &*self.inner;
        let encoded = truncate_hint(py.allow_threads(|| ex.encode(caption, truncate)))?;
        let image = read_image(py, image)?;
        let context = image
            .path
            .as_ref()
            .map(|p| format!("preprocessing {}", p.display()));
        let e = py
            .allow_threads(|| {
                ex.preprocess_config().check_image(&image.decoded)?;
                let input = ex.preprocess(&image.decoded)?;
                ex.embed(&input.pixels, &encoded)
            })
            .map_err(|e| py_err(e, context.as_deref()))?;
        Ok((vector(py, e.image), vector(py, e.text)))
    }

    /// The caption's tokens as the model's tokenizer makes them (SOT … EOT).
    #[pyo3(signature = (caption, *, truncate = false))]
    fn tokenize(&self, py: Python<'_>, caption: &str, truncate: bool) -> PyResult<Vec<String>> {
        let ex = &*self.inner;
        let encoded = truncate_hint(py.allow_threads(|| ex.encode(caption, truncate)))?;
        Ok(encoded.tokens)
    }

    /// The words of `caption` the model's vocabulary does not hold (each read as `<unk>`).
    fn unknown_words(&self, py: Python<'_>, caption: &str) -> PyResult<Vec<String>> {
        let ex = &*self.inner;
        py.allow_threads(|| ex.unknown_words(caption)).or_raise()
    }

    /// Number of blocks of the (text, image) towers: valid layers are 0 ≤ L < that.
    #[getter]
    fn layers(&self) -> (usize, usize) {
        let m = self.inner.model();
        (
            m.text.config.transformer.layers,
            m.vision.config.transformer.layers,
        )
    }

    /// The model: its directory as given, or "built-in".
    #[getter]
    fn model(&self) -> String {
        self.json_name.clone()
    }

    fn __repr__(&self) -> String {
        let (t, i) = self.layers();
        format!(
            "pairlens.Explainer({}, device={:?}, layers=({t}, {i}))",
            match self.json_name.as_str() {
                "built-in" => "None".to_string(),
                dir => format!("{dir:?}"),
            },
            device_name(self.inner.device()),
        )
    }
}

fn device_name(device: &pairlens::Device) -> String {
    match device {
        pairlens::Device::Cpu => "cpu".into(),
        other => format!("{other:?}"),
    }
}

impl Explainer {
    fn wrap(
        &self,
        explanations: Vec<pairlens::Explanation>,
        captions: &[String],
        geometry: Geometry,
        source: &Source,
    ) -> Vec<Explanation> {
        explanations
            .into_iter()
            .zip(captions)
            .map(|(inner, caption)| Explanation {
                inner,
                geometry,
                caption: caption.clone(),
                model: self.json_name.clone(),
                source: source.clone(),
            })
            .collect()
    }
}

#[pymethods]
impl ImageSide {
    /// The block of the image tower whose input is attributed.
    #[getter]
    fn image_layer(&self) -> usize {
        self.side.settings().image_layer
    }

    /// Path points N.
    #[getter]
    fn steps(&self) -> usize {
        self.side.settings().steps
    }

    /// "exclip" or "cosine".
    #[getter]
    fn mode(&self) -> &'static str {
        self.side.settings().mode.as_str()
    }

    /// Seconds its computation took.
    #[getter]
    fn seconds(&self) -> f64 {
        self.side.seconds()
    }

    /// (width, height) of the original image.
    #[getter]
    fn size(&self) -> (usize, usize) {
        self.geometry.original
    }

    fn __repr__(&self) -> String {
        let (w, h) = self.geometry.original;
        format!(
            "<pairlens.ImageSide {w}×{h} image_layer={} steps={} mode={}>",
            self.image_layer(),
            self.steps(),
            self.mode()
        )
    }
}

#[pymethods]
impl Explanation {
    /// The token × image-token interactions, float32 `[tokens, image tokens]`: the CLS column
    /// first if the image tower has one (CLIP), then the patches.
    #[getter]
    fn interactions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, cols) = self
            .inner
            .interactions
            .dims2()
            .map_err(|e| py_err(e.into(), None))?;
        let values: Vec<f32> = self
            .inner
            .interactions
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| py_err(e.into(), None))?;
        matrix(py, rows, cols, values)
    }

    /// The tokens (rows), SOT … EOT.
    #[getter]
    fn tokens(&self) -> Vec<String> {
        self.inner.tokens.clone()
    }

    /// Whether column 0 of `interactions` is a class token (CLIP) or every column a patch
    /// (SigLIP).
    #[getter]
    fn class_token(&self) -> bool {
        self.inner.class_token
    }

    /// The caption explained.
    #[getter]
    fn caption(&self) -> String {
        self.caption.clone()
    }

    /// Cosine similarity of the two embeddings.
    #[getter]
    fn score(&self) -> f32 {
        self.inner.score
    }

    /// score − (Σ A + the reference terms).
    #[getter]
    fn residual(&self) -> f32 {
        self.inner.residual
    }

    /// Σ A over all entries.
    #[getter]
    fn total(&self) -> PyResult<f32> {
        self.inner.total().or_raise()
    }

    /// The three reference terms that close the conservation identity.
    #[getter]
    fn reference_terms(&self) -> HashMap<&'static str, f32> {
        let r = self.inner.reference_terms;
        HashMap::from([
            ("text_vs_image_reference", r.text_vs_image_reference),
            ("text_reference_vs_image", r.text_reference_vs_image),
            ("reference_vs_reference", r.reference_vs_reference),
        ])
    }

    /// exclip's own reference terms (cosines), for comparison with it.
    #[getter]
    fn exclip_terms(&self) -> HashMap<&'static str, f32> {
        let x = self.inner.exclip_terms;
        HashMap::from([
            ("score", x.score),
            ("text_vs_image_reference", x.text_vs_image_reference),
            ("text_reference_vs_image", x.text_reference_vs_image),
            ("reference_vs_reference", x.reference_vs_reference),
        ])
    }

    /// Patch grid (rows, cols).
    #[getter]
    fn grid(&self) -> (usize, usize) {
        self.inner.grid
    }

    /// The text block whose input was attributed.
    #[getter]
    fn text_layer(&self) -> usize {
        self.inner.text_layer
    }

    /// The image block whose input was attributed.
    #[getter]
    fn image_layer(&self) -> usize {
        self.inner.image_layer
    }

    /// Path points N.
    #[getter]
    fn steps(&self) -> usize {
        self.inner.steps
    }

    /// "exclip" or "cosine".
    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode.as_str()
    }

    /// Each token's total interaction (row sums), float32 `[tokens]`.
    fn token_totals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let totals = self
            .inner
            .interactions
            .sum(1)
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| py_err(e.into(), None))?;
        Ok(vector(py, totals))
    }

    /// The heatmap of tokens `start:end` over the patches, float32 `[rows, cols]`.
    fn span<'py>(
        &self,
        py: Python<'py>,
        start: i64,
        end: i64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let h = self.span_heatmap(start, end)?;
        matrix(py, h.grid.0, h.grid.1, h.patches)
    }

    /// The interaction of tokens `start:end` with the CLS image token (`None`: the image tower
    /// has no class token, as SigLIP's).
    fn span_cls(&self, start: i64, end: i64) -> PyResult<Option<f32>> {
        Ok(self.span_heatmap(start, end)?.cls)
    }

    /// Every token's interaction with a box (x0, y0, x1, y1) in original-image pixels.
    #[pyo3(name = "box")]
    fn box_<'py>(
        &self,
        py: Python<'py>,
        bounds: (f32, f32, f32, f32),
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (x0, y0, x1, y1) = bounds;
        let scores = self
            .inner
            .box_scores(&self.geometry, [x0, y0, x1, y1])
            .or_raise()?;
        Ok(vector(py, scores))
    }

    /// Writes the explanation as safetensors, in the layout of the CLI's `--out`.
    #[pyo3(signature = (path, *, overwrite = false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        save_all(py, &[self], &path, overwrite)
    }

    /// Writes a self-contained HTML report, as the CLI's `--html` (with `--span` / `--box`).
    #[pyo3(signature = (path, *, spans = Vec::new(), boxes = Vec::new(), overwrite = false),
           text_signature = "(self, path, *, spans=(), boxes=(), overwrite=False)")]
    fn to_html(
        &self,
        py: Python<'_>,
        path: PathBuf,
        spans: Vec<(i64, i64)>,
        boxes: Vec<(f32, f32, f32, f32)>,
        overwrite: bool,
    ) -> PyResult<()> {
        use pairlens::render::html::{report, BoxReport, CaptionReport, ReportInput, SpanReport};
        check_writable(&path, overwrite)?;
        let e = &self.inner;
        let heatmaps = spans
            .iter()
            .map(|&(a, b)| self.span_heatmap(a, b))
            .collect::<PyResult<Vec<_>>>()?;
        let boxes: Vec<[f32; 4]> = boxes.iter().map(|&(a, b, c, d)| [a, b, c, d]).collect();
        let scores = boxes
            .iter()
            .map(|&b| e.box_scores(&self.geometry, b))
            .collect::<pairlens::Result<Vec<_>>>()
            .or_raise()?;
        let decoded = &self.source.decoded;
        let (w, h) = (decoded.width as u32, decoded.height as u32);
        let original = image::RgbImage::from_raw(w, h, decoded.to_rgb())
            .ok_or_else(|| invalid("the image buffer does not fit its size".into()))?;
        let geometry = self.geometry;
        let to_input = move |x: f32, y: f32| geometry.to_input(x, y);
        let model = match self.model.as_str() {
            "built-in" => pairlens::builtin::NAME.to_string(),
            dir => dir.to_string(),
        };
        let image_name = match &self.source.path {
            Some(p) => p.display().to_string(),
            None => "(an in-memory image)".to_string(),
        };
        let caption = CaptionReport {
            caption: &self.caption,
            explanation: e,
            spans: spans
                .iter()
                .zip(&heatmaps)
                .map(|(&(start, end), heatmap)| SpanReport {
                    start: start as usize,
                    end: end as usize,
                    heatmap,
                })
                .collect(),
            boxes: boxes
                .iter()
                .zip(&scores)
                .map(|(&bbox, s)| BoxReport {
                    bbox,
                    token_scores: s,
                })
                .collect(),
        };
        let input = ReportInput {
            title: "pairlens explain",
            model: &model,
            image_name: &image_name,
            original: &original,
            to_input: &to_input,
            input_size: geometry.input,
            captions: vec![caption],
            timings: Vec::new(),
        };
        let html =
            report(&input).or_raise_in(&format!("building the HTML report {}", path.display()))?;
        py.allow_threads(|| std::fs::write(&path, html))
            .map_err(|e| py_err(pairlens::Error::io(&path, e), None))
    }

    fn __repr__(&self) -> String {
        format!(
            "<pairlens.Explanation {:?} score={:.4} residual={:.2e} tokens={} grid={}×{} \
             layers={}/{} steps={} mode={}>",
            self.caption,
            self.inner.score,
            self.inner.residual,
            self.inner.tokens.len(),
            self.inner.grid.0,
            self.inner.grid.1,
            self.inner.text_layer,
            self.inner.image_layer,
            self.inner.steps,
            self.inner.mode
        )
    }
}

impl Explanation {
    fn span_heatmap(&self, start: i64, end: i64) -> PyResult<pairlens::SpanHeatmap> {
        let n = self.inner.tokens.len();
        let (Ok(a), Ok(b)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(invalid(format!(
                "token span {start}:{end} is out of range: spans are start:end with 0 ≤ start \
                 < end ≤ {n}"
            )));
        };
        self.inner.span_heatmap(a, b).or_raise()
    }
}

/// Refuses to replace a file unless `overwrite` (`FileExistsError`); a directory is never
/// replaced (`IsADirectoryError`).
fn check_writable(path: &Path, overwrite: bool) -> PyResult<()> {
    if path.is_dir() {
        return Err(PyIsADirectoryError::new_err(format!(
            "{} is a directory: give a file name",
            path.display()
        )));
    }
    if path.exists() && !overwrite {
        return Err(PyFileExistsError::new_err(format!(
            "{} already exists; pass overwrite=True to overwrite it",
            path.display()
        )));
    }
    Ok(())
}

/// Writes explanations to one safetensors file in the CLI's `--out` layout (several:
/// `caption{k}/…`), refusing to replace an existing file unless `overwrite`.
fn save_all(
    py: Python<'_>,
    explanations: &[&Explanation],
    path: &Path,
    overwrite: bool,
) -> PyResult<()> {
    check_writable(path, overwrite)?;
    let Some(first) = explanations.first() else {
        return Err(invalid("save: no explanations to save".into()));
    };
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), first.model.clone());
    if let Some(p) = &first.source.path {
        meta.insert("image".to_string(), p.display().to_string());
    }
    let captions: Vec<&str> = explanations.iter().map(|e| e.caption.as_str()).collect();
    meta.insert(
        "captions".to_string(),
        serde_json::to_string(&captions).unwrap_or_default(),
    );
    let inner: Vec<pairlens::Explanation> = explanations.iter().map(|e| e.inner.clone()).collect();
    py.allow_threads(|| export::save(&inner, path, meta))
        .or_raise()
}

/// `pairlens.save(explanations, path, *, overwrite=False)`: several explanations in one file.
#[pyfunction]
#[pyo3(name = "save", signature = (explanations, path, *, overwrite = false))]
fn save_many(
    py: Python<'_>,
    explanations: Vec<Py<Explanation>>,
    path: PathBuf,
    overwrite: bool,
) -> PyResult<()> {
    let bound: Vec<&Explanation> = explanations.iter().map(|e| e.get()).collect();
    save_all(py, &bound, &path, overwrite)
}

/// The native module `pairlens._pairlens`.
#[pymodule]
fn _pairlens(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let errors = ERRORS.get_or_try_init(py, || make_errors(py))?;
    m.add("Error", errors.base.bind(py))?;
    m.add("InputError", errors.input.bind(py))?;
    m.add("ModelError", errors.model.bind(py))?;
    m.add("MissingFileError", errors.missing.bind(py))?;
    m.add("FileError", errors.file.bind(py))?;
    m.add("ComputeError", errors.compute.bind(py))?;
    m.add_class::<Explainer>()?;
    m.add_class::<ImageSide>()?;
    m.add_class::<Explanation>()?;
    m.add_function(wrap_pyfunction!(save_many, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_STEPS", pairlens::attribution::MAX_STEPS)?;
    Ok(())
}
