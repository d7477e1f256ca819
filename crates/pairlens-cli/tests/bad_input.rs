//! The bad-input matrix of the command line: every case runs the real `pairlens` binary on an
//! input built at test time (tiny PNG/JPEG bytes written by hand, broken copies of the tiny HF
//! fixture model, broken grounding JSONL files, bad flag values) and asserts that it fails
//! cleanly:
//!
//! - the expected exit code: 1 for errors the command finds, 2 for values clap refuses while
//!   parsing the command line (the usage-error code, as for any clap program);
//! - stderr starts with `error: ` and contains every expected substring, which name the input
//!   (the file path or the flag) and the problem;
//! - no panic (`panicked`, `RUST_BACKTRACE`), no allocation failure (`memory allocation`), no
//!   death by signal, stderr under 4 KB;
//! - peak memory under [`MAX_RSS_KB`] = 256 MiB. The bound is ~1.8× what a *normal*
//!   explanation takes at its most expensive README setting (built-in model, layers 1/1: ~145 MB
//!   peak RSS, measured the same way by [`normal_run_fits_the_bound`]); a bad input must never
//!   cost more than a good one. Two measurements, both checked: the child's peak RSS (`VmHWM`)
//!   sampled from /proc every 2 ms while it runs (the child's own, but the last moments before
//!   exit can be missed), and `ru_maxrss` from `wait4` when it is reaped (never misses a peak,
//!   but Linux folds in the peak RSS of the test process that spawned it, a few tens of MB, so it
//!   can only over-state). A watchdog kills a child once its sampled peak is over the bound or it
//!   runs past [`TIMEOUT`], so a runaway case fails fast instead of taking the machine down.
//!
//! The cases run on four threads (the children are mostly waiting on tiny files); the whole
//! matrix takes a few seconds in release builds. The defects it found are fixed; each keeps its
//! own test at the bottom, named by what used to go wrong.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Peak RSS allowed to any bad-input run, in KiB (256 MiB; see the module docs).
const MAX_RSS_KB: u64 = 256 * 1024;
/// Wall-clock limit of one case (they take milliseconds; this only stops a hang).
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest stderr accepted: an error message, not a dump of the input.
const MAX_STDERR: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Running one case
// ---------------------------------------------------------------------------------------------

/// One row of the matrix: the command line (with `{t}` for the scratch directory, `{tiny}` for
/// the tiny HF fixture model, `{img}` for a good 44×30 image, `{out}` for a fresh per-case
/// output path, `{port}` for a loopback port that is already taken), the expected exit code and
/// the substrings stderr must contain (same placeholders).
struct Case {
    name: &'static str,
    args: Vec<OsString>,
    code: i32,
    want: Vec<String>,
}

fn case(name: &'static str, code: i32, args: Vec<String>, want: &[&str]) -> Case {
    Case {
        name,
        args: args.into_iter().map(OsString::from).collect(),
        code,
        want: want.iter().map(|s| s.to_string()).collect(),
    }
}

/// `args`, with the flags of `defaults` (flag, value) added unless `args` gives them already.
fn with_defaults(cmd: &str, defaults: &[(&str, &str)], args: &[&str]) -> Vec<String> {
    let mut v = vec![cmd.to_string()];
    for (flag, value) in defaults {
        if !args.contains(flag) {
            v.extend([flag.to_string(), value.to_string()]);
        }
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// `pairlens explain --model {tiny} --image {img} --caption "a dog"`, overridden/extended by `args`.
fn explain(args: &[&str]) -> Vec<String> {
    let d = [
        ("--model", "{tiny}"),
        ("--image", "{img}"),
        ("--caption", "a dog"),
    ];
    with_defaults("explain", &d, args)
}

/// `pairlens embed --model {tiny} --image {img} --caption "a dog"`, overridden/extended by `args`.
fn embed(args: &[&str]) -> Vec<String> {
    let d = [
        ("--model", "{tiny}"),
        ("--image", "{img}"),
        ("--caption", "a dog"),
    ];
    with_defaults("embed", &d, args)
}

/// `pairlens eval-grounding --out {out} --steps 2` (built-in model), plus `args`.
fn grounding(args: &[&str]) -> Vec<String> {
    with_defaults(
        "eval-grounding",
        &[("--out", "{out}"), ("--steps", "2")],
        args,
    )
}

/// `pairlens serve --addr 127.0.0.1:0` (built-in model), plus `args`; a server that starts would
/// run until the timeout, which fails the case.
fn serve(args: &[&str]) -> Vec<String> {
    with_defaults("serve", &[("--addr", "127.0.0.1:0")], args)
}

/// What a finished (or killed) child did.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    /// `ru_maxrss` from `wait4`: an upper bound (see the module docs).
    max_rss_kb: u64,
    /// The last `VmHWM` sampled from /proc: the child's own peak (0 if it exited first).
    sampled_rss_kb: u64,
    seconds: f64,
    /// Why the watchdog killed it, if it did.
    killed: Option<String>,
}

/// The shared scratch directory and the values of the placeholders.
struct Ctx {
    t: PathBuf,
    port: u16,
}

impl Ctx {
    fn expand(&self, s: &str, out: &Path) -> String {
        s.replace("{t}", &self.t.display().to_string())
            .replace("{tiny}", &tiny().display().to_string())
            .replace("{img}", &image().display().to_string())
            .replace("{out}", &out.display().to_string())
            .replace("{port}", &self.port.to_string())
    }

    fn expand_os(&self, s: &OsString, out: &Path) -> OsString {
        match s.to_str() {
            Some(s) => self.expand(s, out).into(),
            None => s.clone(),
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> PathBuf {
    repo().join("fixtures/models/hf-tiny-quickgelu")
}

fn image() -> PathBuf {
    repo().join("fixtures/models/images/gradient_44x30.png")
}

/// Peak RSS (VmHWM) of a running process from /proc, in KiB.
fn peak_rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `pairlens` with `args`, stdout and stderr into files under `dir`; reaped with `wait4` so
/// that its own peak RSS is known (also for the cases that run in parallel).
fn run(args: &[OsString], dir: &Path, tag: &str) -> Outcome {
    std::fs::create_dir_all(dir).unwrap();
    let err_path = dir.join(format!("{tag}.stderr"));
    let out_path = dir.join(format!("{tag}.stdout"));
    let started = Instant::now();
    // Reaped below with `wait4`, which (unlike `Child::wait`) gives its rusage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start pairlens");
    let pid = child.id() as i32;
    let mut killed = None;
    let mut sampled = 0;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child, with valid out-pointers.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if killed.is_none() {
            let rss = peak_rss_kb(pid).unwrap_or(0);
            sampled = sampled.max(rss);
            if rss > MAX_RSS_KB {
                killed = Some(format!(
                    "killed at {rss} KiB peak RSS (bound {MAX_RSS_KB} KiB)"
                ));
            } else if started.elapsed() > TIMEOUT {
                killed = Some(format!("killed after {TIMEOUT:?} (hung?)"));
            }
            if killed.is_some() {
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = std::fs::read(&err_path).unwrap();
    Outcome {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        max_rss_kb: usage.ru_maxrss as u64,
        sampled_rss_kb: sampled,
        seconds: started.elapsed().as_secs_f64(),
        killed,
    }
}

/// The command line as one could paste it into a shell.
fn shell_line(args: &[OsString]) -> String {
    let mut s = String::from("pairlens");
    for a in args {
        let a = a.to_string_lossy();
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:,=".contains(c))
        {
            s += &format!(" {a}");
        } else if a.len() > 80 {
            let start: String = a.chars().take(40).collect();
            s += &format!(" '{start}…' ({} bytes)", a.len());
        } else {
            s += &format!(" '{}'", a.replace('\'', r"'\''"));
        }
    }
    s
}

/// Everything wrong with how `case` ran (empty: it failed exactly as it should).
fn problems(cx: &Ctx, case: &Case, o: &Outcome, out: &Path) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(k) = &o.killed {
        p.push(k.clone());
    }
    if let Some(sig) = o.signal {
        p.push(format!("died of signal {sig}"));
    }
    if o.code != Some(case.code) {
        p.push(format!("exit code {:?}, expected {}", o.code, case.code));
    }
    if !o.stderr.starts_with("error: ") {
        p.push("stderr does not start with `error: `".into());
    }
    // clap's usage line names every required flag: it does not count as naming the input.
    let message: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| !l.starts_with("Usage:"))
        .collect();
    let message = message.join("\n");
    for w in &case.want {
        let w = cx.expand(w, out);
        if !message.contains(&w) {
            p.push(format!("stderr lacks {w:?}"));
        }
    }
    for bad in ["panicked", "RUST_BACKTRACE", "memory allocation"] {
        if o.stderr.contains(bad) {
            p.push(format!("stderr contains {bad:?}"));
        }
    }
    if o.stderr.len() >= MAX_STDERR {
        p.push(format!("stderr is {} bytes", o.stderr.len()));
    }
    if o.max_rss_kb.max(o.sampled_rss_kb) > MAX_RSS_KB {
        p.push(format!(
            "peak RSS over the bound: {} KiB sampled, {} KiB from wait4",
            o.sampled_rss_kb, o.max_rss_kb
        ));
    }
    p
}

/// Run `cases` on four threads; panics with a report of every case that did not fail cleanly.
fn run_matrix(cx: &Ctx, cases: &[Case]) {
    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let out = cx.t.join("out").join(format!("case{i:03}"));
                let args: Vec<OsString> = case.args.iter().map(|a| cx.expand_os(a, &out)).collect();
                let o = run(&args, &cx.t.join("logs"), &format!("case{i:03}"));
                let p = problems(cx, case, &o, &out);
                results.lock().unwrap().push((i, args, o, p));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let (mut report, mut failed, mut peak) = (String::new(), 0, (0, ""));
    for (i, args, o, p) in &results {
        let name = cases[*i].name;
        if o.sampled_rss_kb > peak.0 {
            peak = (o.sampled_rss_kb, name);
        }
        if !p.is_empty() {
            failed += 1;
            report += &format!(
                "\n[{name}] {}\n  $ {}\n  stderr: {}\n  ({:.2} s, peak RSS {} KiB sampled, {} KiB from wait4)\n",
                p.join("; "),
                shell_line(args),
                o.stderr.trim_end().replace('\n', "\n          "),
                o.seconds,
                o.sampled_rss_kb,
                o.max_rss_kb,
            );
        }
    }
    let worst_wait4 = results.iter().map(|r| r.2.max_rss_kb).max().unwrap_or(0);
    eprintln!(
        "{} cases, {failed} failed; largest sampled peak RSS {} KiB ({}), largest from wait4 {} KiB \
         (includes this test process's own peak); bound {MAX_RSS_KB} KiB",
        cases.len(),
        peak.0,
        peak.1,
        worst_wait4,
    );
    assert!(failed == 0, "{failed} of {} cases:{report}", cases.len());
}

// ---------------------------------------------------------------------------------------------
// Building the inputs
// ---------------------------------------------------------------------------------------------

/// The scratch directory, removed when the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A zlib stream of `raw` in stored (uncompressed) deflate blocks.
fn zlib_stored(raw: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push((i + 1 == blocks.len()) as u8);
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    if raw.is_empty() {
        z.extend([1, 0, 0, 0xFF, 0xFF]);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    z
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend(crc32(&c[4..]).to_be_bytes());
    c
}

/// An 8-bit RGB PNG whose IHDR says `w`×`h`, with `rows` rows of grey pixel data (all of them
/// for a real image; a few for one whose header lies), every CRC correct.
fn png(w: u32, h: u32, rows: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let row: Vec<u8> = std::iter::once(0)
        .chain(std::iter::repeat_n(128, 3 * w as usize))
        .collect();
    let raw = row.repeat(rows as usize);
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend(png_chunk(b"IHDR", &ihdr));
    f.extend(png_chunk(b"IDAT", &zlib_stored(&raw)));
    f.extend(png_chunk(b"IEND", &[]));
    f
}

/// A real 16×16 JPEG (from the image crate's encoder).
fn jpeg() -> Vec<u8> {
    let rgb: Vec<u8> = (0..16 * 16)
        .flat_map(|i| [i as u8, 255 - i as u8, 90])
        .collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(&rgb, 16, 16, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// The JPEG with its SOF0 frame header saying `w`×`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut j = jpeg();
    let sof = j.windows(2).position(|m| m == [0xFF, 0xC0]).expect("SOF0");
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

/// A WebP file of one VP8X chunk whose canvas is `w`×`h` (and no image data).
fn webp_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut body = b"WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00".to_vec();
    body.extend(&(w - 1).to_le_bytes()[..3]);
    body.extend(&(h - 1).to_le_bytes()[..3]);
    let mut f = b"RIFF".to_vec();
    f.extend((body.len() as u32).to_le_bytes());
    f.extend(body);
    f
}

/// A copy of the tiny HF fixture model at `dir`, then broken by `edit`.
fn model(dir: &Path, edit: impl FnOnce(&Path)) {
    std::fs::create_dir_all(dir).unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    edit(dir);
}

/// Rewrite `dir/file` (JSON) through `edit`.
fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(file);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// Rewrite `dir/model.safetensors` through `edit` of its JSON header and its data bytes.
fn edit_safetensors(dir: &Path, edit: impl FnOnce(&mut serde_json::Value, &mut Vec<u8>)) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut data = bytes[8 + n..].to_vec();
    edit(&mut header, &mut data);
    let h = header.to_string().into_bytes();
    let mut f = (h.len() as u64).to_le_bytes().to_vec();
    f.extend(h);
    f.extend(data);
    std::fs::write(&p, f).unwrap();
}

/// Overwrite `dir/model.safetensors` byte-wise.
fn patch_file(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let p = dir.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    edit(&mut b);
    std::fs::write(&p, b).unwrap();
}

/// Set one f32 of tensor `name` to `value` (a weight the computation uses).
fn poison(header: &serde_json::Value, data: &mut [u8], name: &str, index: usize, value: f32) {
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 4 * index;
    data[start..start + 4].copy_from_slice(&value.to_le_bytes());
}

/// Write every input the cases name into `t`.
#[rustfmt::skip]
fn build_inputs(t: &Path) {
    use serde_json::json;
    let w = |name: &str, bytes: &[u8]| std::fs::write(t.join(name), bytes).unwrap();
    // Images.
    w("ok.png", &png(4, 4, 4));
    w("zero.png", b"");
    w("text.png", b"hello, I am a text file\n");
    w("x.gif", b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;");
    w("x.bmp", &[b"BM".as_slice(), &[0u8; 60]].concat());
    w("x.tiff", &[b"II*\x00".as_slice(), &[0u8; 60]].concat());
    w("vp8x-only.webp", &webp_claiming(10000, 10000));
    w("garbage.webp", b"RIFF\x20\x00\x00\x00WEBPVP8 \x14\x00\x00\x00not really a vp8 stream");
    w("sig-only.png", &png(4, 4, 4)[..20]);
    let good = png(8, 8, 8);
    w("cut-idat.png", &good[..good.len() - 40]);
    let mut crc = png(4, 4, 4);
    crc[29] ^= 0xFF; // the IHDR's CRC
    w("bad-crc.png", &crc);
    w("huge.png", &png(20000, 20000, 2));
    w("wide.png", &png(100_000, 1, 1));
    w("tall.png", &png(1, 100_000, 100_000));
    w("zero-width.png", &png(0, 4, 0));
    w("huge.jpg", &jpeg_claiming(65000, 65000));
    w("soi-only.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00");
    let j = jpeg();
    w("cut.jpg", &j[..j.len() / 2]);
    let mut scan = j.clone();
    let sos = scan.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
    scan[sos + 2] = 0xFF; // the scan header's length
    w("bad-sos.jpg", &scan);
    std::fs::create_dir_all(t.join("a-directory.png")).unwrap();
    w("a-file", b"just a file\n");
    // A FIFO with no writer: opening it for reading blocks.
    let fifo = std::ffi::CString::new(t.join("fifo.png").into_os_string().into_encoded_bytes());
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o644) }, 0);

    // Model directories: the tiny fixture with one thing broken.
    let m = |name: &str, edit: &dyn Fn(&Path)| model(&t.join(name), edit);
    let put = |name: &str, file: &str, text: &str| m(name, &|d| std::fs::write(d.join(file), text).unwrap());
    let rm = |name: &str, file: &str| m(name, &|d| std::fs::remove_file(d.join(file)).unwrap());
    let set = |name: &str, file: &str, pointer: &str, v: serde_json::Value| {
        m(name, &|d| edit_json(d, file, |c| *c.pointer_mut(pointer).expect(pointer) = v.clone()))
    };
    rm("m-no-config", "config.json");
    put("m-config-not-json", "config.json", "{not json");
    put("m-config-array", "config.json", "[1, 2, 3]");
    set("m-layers-string", "config.json", "/text_config/num_hidden_layers", json!("two"));
    set("m-heads-zero", "config.json", "/text_config/num_attention_heads", json!(0));
    set("m-hidden-huge", "config.json", "/vision_config/hidden_size", json!(1u64 << 40));
    set("m-layers-huge", "config.json", "/text_config/num_hidden_layers", json!(1_000_000_000));
    set("m-eps-negative", "config.json", "/vision_config/layer_norm_eps", json!(-1e-5));
    rm("m-no-tokenizer", "tokenizer.json");
    put("m-tokenizer-garbage", "tokenizer.json", r#"{"model": 12"#);
    put("m-tokenizer-no-vocab", "tokenizer.json", r#"{"version": "1.0", "model": {"type": "BPE"}}"#);
    set("m-std-zero", "preprocessor_config.json", "/image_std", json!([0, 0, 0]));
    set("m-crop-zero", "preprocessor_config.json", "/crop_size", json!({"height": 0, "width": 0}));
    set("m-mean-one", "preprocessor_config.json", "/image_mean", json!([0.5]));
    put("m-st-empty", "model.safetensors", "");
    m("m-st-header-huge", &|d| patch_file(d, |b| b[..8].copy_from_slice(&(1u64 << 62).to_le_bytes())));
    m("m-st-header-garbage", &|d| patch_file(d, |b| {
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        b[8..8 + n].fill(0xFF);
    }));
    m("m-st-truncated", &|d| patch_file(d, |b| b.truncate(b.len() / 2)));
    m("m-st-past-end", &|d| edit_safetensors(d, |h, data| {
        // The tensor stored last claims 4 KiB more than the file holds.
        let last = h.as_object().unwrap().iter()
            .filter(|(k, _)| *k != "__metadata__")
            .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
            .map(|(k, _)| k.clone())
            .unwrap();
        let start = h[&last]["data_offsets"][0].as_u64().unwrap();
        let end = data.len() as u64 + 4096;
        h[&last]["data_offsets"] = json!([start, end]);
        h[&last]["shape"] = json!([(end - start) / 4]);
    }));
    m("m-wrong-shape", &|d| edit_safetensors(d, |h, _| h["text_model.final_layer_norm.weight"]["shape"] = json!([16, 2])));
    m("m-nan-weight", &|d| edit_safetensors(d, |h, data| poison(h, data, "vision_model.encoder.layers.1.mlp.fc1.weight", 7, f32::NAN)));
    m("m-inf-weight", &|d| edit_safetensors(d, |h, data| poison(h, data, "text_model.encoder.layers.0.mlp.fc2.weight", 3, f32::INFINITY)));

    // Grounding data (mosaics JSONL) beside one good image and one that is not an image; each
    // file is the good line with one edit.
    let g = t.join("g");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::copy(repo().join("examples/mosaics/00000.png"), g.join("a.png")).unwrap();
    std::fs::write(g.join("text.png"), "not an image").unwrap();
    let good = json!({"image": "a.png", "caption": "a running shoe",
        "phrases": [{"span": [1, 4], "class": "sneaker", "boxes": [[0, 8, 31, 25]]}]});
    let jl = |name: &str, lines: &[String]| std::fs::write(g.join(name), lines.join("\n") + "\n").unwrap();
    let edited = |name: &str, pointer: &str, v: serde_json::Value| {
        let mut item = good.clone();
        *item.pointer_mut(pointer).expect(pointer) = v;
        jl(name, &[item.to_string()]);
    };
    let without = |name: &str, field: &str| {
        let mut item = good.clone();
        item.as_object_mut().unwrap().remove(field);
        jl(name, &[item.to_string()]);
    };
    jl("not-json.jsonl", &["this is not json".into()]);
    without("no-caption.jsonl", "caption");
    without("no-phrases.jsonl", "phrases");
    edited("image-missing.jsonl", "/image", json!("missing.png"));
    edited("image-not-image.jsonl", "/image", json!("text.png"));
    edited("box-outside.jsonl", "/phrases/0/boxes", json!([[500, 500, 600, 600]]));
    edited("box-reversed.jsonl", "/phrases/0/boxes", json!([[10, 10, 5, 5]]));
    edited("box-three.jsonl", "/phrases/0/boxes", json!([[0, 0, 10]]));
    edited("span-outside.jsonl", "/phrases/0/span", json!([1, 40]));
    edited("span-string.jsonl", "/phrases/0/span", json!("1:4"));
    jl("line-two.jsonl", &[good.to_string(), r#"{"image": 3}"#.into()]);
    jl("empty.jsonl", &[]);
    jl("good.jsonl", &[good.to_string()]);

    // Example directories for `serve --examples`.
    let ex = |name: &str, jsonl: &str| {
        std::fs::create_dir_all(t.join(name)).unwrap();
        std::fs::write(t.join(name).join("data.jsonl"), jsonl).unwrap();
    };
    ex("ex-not-json", "{oops\n");
    ex("ex-missing-image", r#"{"image": "nope.png", "caption": "a bag"}"#);
    ex("ex-empty", "");
    ex("ex-not-image", r#"{"image": "data.jsonl", "caption": "a bag"}"#);
    ex("ex-dev-zero", r#"{"image": "/dev/zero", "caption": "a bag"}"#);
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let long = "dog ".repeat(5000);
    let mut v = vec![
        // --- Image files (explain) ---
        case("image: missing file", 1, explain(&["--image", "{t}/missing.png"]), &["{t}/missing.png", "No such file"]),
        case("image: a directory", 1, explain(&["--image", "{t}/a-directory.png"]), &["{t}/a-directory.png", "directory"]),
        case("image: path through a file", 1, explain(&["--image", "{t}/a-file/x.png"]), &["{t}/a-file/x.png", "Not a directory"]),
        case("image: zero-byte file", 1, explain(&["--image", "{t}/zero.png"]), &["{t}/zero.png", "the file is empty"]),
        case("image: text file named .png", 1, explain(&["--image", "{t}/text.png"]), &["{t}/text.png", "not a JPEG, PNG or WebP"]),
        case("image: GIF", 1, explain(&["--image", "{t}/x.gif"]), &["{t}/x.gif", "not a JPEG, PNG or WebP"]),
        case("image: BMP", 1, explain(&["--image", "{t}/x.bmp"]), &["{t}/x.bmp", "not a JPEG, PNG or WebP"]),
        case("image: TIFF", 1, explain(&["--image", "{t}/x.tiff"]), &["{t}/x.tiff", "not a JPEG, PNG or WebP"]),
        case("image: WebP VP8X says 10000×10000, no data", 1, explain(&["--image", "{t}/vp8x-only.webp"]), &["{t}/vp8x-only.webp", "WebP decoding failed"]),
        case("image: WebP header, garbage body", 1, explain(&["--image", "{t}/garbage.webp"]), &["{t}/garbage.webp", "WebP decoding failed"]),
        case("image: PNG signature only", 1, explain(&["--image", "{t}/sig-only.png"]), &["{t}/sig-only.png", "PNG decoding failed"]),
        case("image: PNG cut inside IDAT", 1, explain(&["--image", "{t}/cut-idat.png"]), &["{t}/cut-idat.png", "PNG decoding failed"]),
        case("image: PNG with a bad IHDR CRC", 1, explain(&["--image", "{t}/bad-crc.png"]), &["{t}/bad-crc.png", "CRC"]),
        case("image: PNG of zero width", 1, explain(&["--image", "{t}/zero-width.png"]), &["{t}/zero-width.png", "dimensions"]),
        case("image: 100000×1 PNG (aspect ratio)", 1, explain(&["--image", "{t}/wide.png"]), &["{t}/wide.png", "aspect ratio"]),
        case("image: 1×100000 PNG (aspect ratio)", 1, explain(&["--image", "{t}/tall.png"]), &["{t}/tall.png", "aspect ratio"]),
        case("image: PNG header says 20000×20000", 1, explain(&["--image", "{t}/huge.png"]), &["{t}/huge.png", "20000×20000", "--max-pixels"]),
        case("image: 20000×20000 PNG allowed, data missing", 1, explain(&["--image", "{t}/huge.png", "--max-pixels", "1000000000"]), &["{t}/huge.png", "PNG decoding failed"]),
        case("image: JPEG SOF says 65000×65000", 1, explain(&["--image", "{t}/huge.jpg"]), &["{t}/huge.jpg", "65000×65000", "--max-pixels"]),
        case("image: JPEG SOI and APP0 only", 1, explain(&["--image", "{t}/soi-only.jpg"]), &["{t}/soi-only.jpg", "truncated JPEG"]),
        case("image: JPEG cut in half", 1, explain(&["--image", "{t}/cut.jpg"]), &["{t}/cut.jpg", "truncated JPEG"]),
        case("image: JPEG with a broken scan header", 1, explain(&["--image", "{t}/bad-sos.jpg"]), &["{t}/bad-sos.jpg", "JPEG decoding failed"]),
        case("image: --max-pixels 0", 2, explain(&["--max-pixels", "0"]), &["--max-pixels", "'0'"]),
        case("image: --max-pixels not a number", 2, explain(&["--max-pixels", "lots"]), &["--max-pixels", "lots"]),
        // --- Model directories (explain; the tiny HF fixture with one thing broken) ---
        case("model: no such directory", 1, explain(&["--model", "{t}/no-model"]), &["{t}/no-model", "no such directory"]),
        case("model: a file", 1, explain(&["--model", "{t}/ok.png"]), &["{t}/ok.png", "is a file"]),
        case("model: no config.json", 1, explain(&["--model", "{t}/m-no-config"]), &["{t}/m-no-config", "neither config.json"]),
        case("model: config.json not JSON", 1, explain(&["--model", "{t}/m-config-not-json"]), &["{t}/m-config-not-json/config.json", "not valid JSON"]),
        case("model: config.json an array", 1, explain(&["--model", "{t}/m-config-array"]), &["{t}/m-config-array/config.json", "expected a JSON object"]),
        case("model: num_hidden_layers a string", 1, explain(&["--model", "{t}/m-layers-string"]), &["config.json", "text_config.num_hidden_layers", "\"two\""]),
        case("model: zero attention heads", 1, explain(&["--model", "{t}/m-heads-zero"]), &["config.json", "num_attention_heads", "must be positive"]),
        case("model: hidden_size 2^40", 1, explain(&["--model", "{t}/m-hidden-huge"]), &["config.json", "hidden_size 1099511627776"]),
        case("model: a billion layers", 1, explain(&["--model", "{t}/m-layers-huge"]), &["model.safetensors", "missing tensor"]),
        case("model: no tokenizer.json", 1, explain(&["--model", "{t}/m-no-tokenizer"]), &["tokenizer.json", "missing file"]),
        case("model: tokenizer.json garbage", 1, explain(&["--model", "{t}/m-tokenizer-garbage"]), &["{t}/m-tokenizer-garbage/tokenizer.json", "not a tokenizer.json"]),
        case("model: tokenizer.json without vocab", 1, explain(&["--model", "{t}/m-tokenizer-no-vocab"]), &["{t}/m-tokenizer-no-vocab/tokenizer.json", "vocab"]),
        case("model: image_std zero", 1, explain(&["--model", "{t}/m-std-zero"]), &["preprocessor_config.json", "image_std"]),
        case("model: crop_size zero", 1, explain(&["--model", "{t}/m-crop-zero"]), &["preprocessor_config.json", "crop_size"]),
        case("model: one-element image_mean", 1, explain(&["--model", "{t}/m-mean-one"]), &["{t}/m-mean-one/preprocessor_config.json", "image_mean", "3 channels"]),
        case("model: safetensors empty", 1, explain(&["--model", "{t}/m-st-empty"]), &["{t}/m-st-empty/model.safetensors", "not a valid safetensors file"]),
        case("model: safetensors header length 2^62", 1, explain(&["--model", "{t}/m-st-header-huge"]), &["{t}/m-st-header-huge/model.safetensors", "header too large"]),
        case("model: safetensors header garbage", 1, explain(&["--model", "{t}/m-st-header-garbage"]), &["{t}/m-st-header-garbage/model.safetensors", "not a valid safetensors file"]),
        case("model: safetensors cut in half", 1, explain(&["--model", "{t}/m-st-truncated"]), &["{t}/m-st-truncated/model.safetensors", "not a valid safetensors file"]),
        case("model: tensor past the end of the file", 1, explain(&["--model", "{t}/m-st-past-end"]), &["{t}/m-st-past-end/model.safetensors", "not a valid safetensors file"]),
        case("model: tensor of the wrong shape", 1, explain(&["--model", "{t}/m-wrong-shape"]), &["model.safetensors", "text_model.final_layer_norm.weight", "[16, 2], expected [32]"]),
        case("model: NaN weight", 1, explain(&["--model", "{t}/m-nan-weight"]), &["model.safetensors", "vision_model.encoder.layers.1.mlp.fc1.weight", "NaN"]),
        // --- Flag values of explain ---
        case("flags: --text-layer past the last block", 1, explain(&["--text-layer", "2"]), &["text layer 2 is out of range"]),
        case("flags: --image-layer 99", 1, explain(&["--image-layer", "99"]), &["image layer 99 is out of range"]),
        case("flags: --text-layer not a number", 2, explain(&["--text-layer", "last"]), &["--text-layer", "last"]),
        case("flags: --span past the caption", 1, explain(&["--span", "0:99"]), &["span 0:99", "out of range"]),
        case("flags: --span reversed", 2, explain(&["--span", "3:1"]), &["--span", "3:1", "I < J"]),
        case("flags: --span empty", 2, explain(&["--span", "2:2"]), &["--span", "2:2", "I < J"]),
        case("flags: --span garbage", 2, explain(&["--span", "abc"]), &["--span", "abc", "expected I:J"]),
        case("flags: --span index too large for usize", 2, explain(&["--span", "0:99999999999999999999999"]), &["--span", "not a token index"]),
        case("flags: --box three numbers", 2, explain(&["--box", "1,2,3"]), &["--box", "1,2,3", "four numbers"]),
        case("flags: --box garbage", 2, explain(&["--box", "a,b,c,d"]), &["--box", "not a number"]),
        case("flags: --box nan", 2, explain(&["--box", "nan,0,5,5"]), &["--box", "finite"]),
        case("flags: --box inf", 2, explain(&["--box", "0,0,inf,5"]), &["--box", "finite"]),
        case("flags: --box overflowing f32", 2, explain(&["--box", "0,0,1e39,5"]), &["--box", "finite"]),
        case("flags: --box reversed", 2, explain(&["--box", "10,10,5,5"]), &["--box", "X0 < X1"]),
        case("flags: --box outside the image", 1, explain(&["--box", "100,100,200,200"]), &["outside the image", "44×30"]),
        case("flags: --steps 0", 1, explain(&["--steps", "0"]), &["steps", "at least 1"]),
        case("flags: --steps 100000000", 1, explain(&["--steps", "100000000"]), &["steps 100000000", "at most"]),
        case("flags: --steps not a number", 2, explain(&["--steps", "ten"]), &["--steps", "ten"]),
        case("flags: --mode unknown", 2, explain(&["--mode", "gradcam"]), &["--mode", "gradcam"]),
        case("flags: --text-reference-len past the context", 1, explain(&["--text-reference-len", "1000"]), &["text reference length 1000", "context length"]),
        case("flags: --device nonsense", 2, explain(&["--device", "nonsense"]), &["--device", "nonsense", "expected cpu, cuda or cuda:N"]),
        case("flags: --device cuda:x", 2, explain(&["--device", "cuda:x"]), &["--device", "not a GPU number"]),
        case("flags: --caption empty", 1, explain(&["--caption", ""]), &["empty caption", "--caption"]),
        case("flags: second --caption blank", 1, explain(&["--caption", "a dog", "--caption", "   "]), &["empty caption"]),
        case("flags: caption of 5000 words", 1, explain(&["--caption", &long]), &["(20000 characters)", "context length", "--truncate"]),
        case("flags: --json twice", 2, explain(&["--json", "--json"]), &["--json", "cannot be used multiple times"]),
        case("flags: unknown flag", 2, explain(&["--colour", "red"]), &["--colour"]),
        case("flags: no --caption", 2, vec!["explain".into(), "--image".into(), "{img}".into()], &["--caption"]),
        case("flags: no --image", 2, vec!["explain".into(), "--caption".into(), "a dog".into()], &["--image"]),
        case("flags: unknown subcommand", 2, vec!["explian".into()], &["explian"]),
        // --- Output paths of explain ---
        case("output: --out an existing file", 1, explain(&["--out", "{t}/ok.png"]), &["{t}/ok.png", "already exists", "--force"]),
        case("output: --out a directory", 1, explain(&["--out", "{t}/a-directory.png", "--force"]), &["{t}/a-directory.png", "is a directory"]),
        // A missing directory is created, as for --png and --html; a file on the way is refused.
        case("output: --out under a file", 1, explain(&["--out", "{t}/ok.png/e.safetensors"]), &["{t}/ok.png/e.safetensors", "is a file, not a directory"]),
        case("output: --html under a file", 1, explain(&["--html", "{t}/ok.png/r.html"]), &["{t}/ok.png/r.html", "is a file, not a directory"]),
        case("output: --html a directory", 1, explain(&["--html", "{t}/a-directory.png"]), &["{t}/a-directory.png", "is a directory: give a file name"]),
        case("output: --html an existing file", 1, explain(&["--html", "{t}/ok.png"]), &["{t}/ok.png", "already exists", "--force"]),
        // --- embed ---
        case("embed: empty caption", 1, embed(&["--caption", ""]), &["caption", "empty"]),
        case("embed: caption of 5000 words", 1, embed(&["--caption", &long]), &["(20000 characters)", "--truncate"]),
        case("embed: PNG header says 20000×20000", 1, embed(&["--image", "{t}/huge.png"]), &["{t}/huge.png", "20000×20000", "--max-pixels"]),
        case("embed: 1×100000 PNG (aspect ratio)", 1, embed(&["--image", "{t}/tall.png"]), &["{t}/tall.png", "aspect ratio"]),
        case("embed: text file named .png", 1, embed(&["--image", "{t}/text.png"]), &["{t}/text.png", "not a JPEG, PNG or WebP"]),
        case("embed: missing image", 1, embed(&["--image", "{t}/missing.png"]), &["{t}/missing.png", "No such file"]),
        case("embed: config.json not JSON", 1, embed(&["--model", "{t}/m-config-not-json"]), &["config.json", "not valid JSON"]),
        case("embed: inf weight", 1, embed(&["--model", "{t}/m-inf-weight"]), &["text_model.encoder.layers.0.mlp.fc2.weight", "inf"]),
        case("embed: no --caption", 2, vec!["embed".into(), "--image".into(), "{img}".into()], &["--caption"]),
        // --- eval-grounding (built-in model) ---
        case("grounding: data file missing", 1, grounding(&["--data", "{t}/g/nope.jsonl"]), &["{t}/g/nope.jsonl", "data file not found"]),
        case("grounding: data is a directory", 1, grounding(&["--data", "{t}/g"]), &["{t}/g", "data file not found"]),
        case("grounding: line not JSON", 1, grounding(&["--data", "{t}/g/not-json.jsonl"]), &["{t}/g/not-json.jsonl", "line 1"]),
        case("grounding: no caption field", 1, grounding(&["--data", "{t}/g/no-caption.jsonl"]), &["no-caption.jsonl", "line 1", "missing field `caption`"]),
        case("grounding: no phrases field", 1, grounding(&["--data", "{t}/g/no-phrases.jsonl"]), &["no-phrases.jsonl", "missing field `phrases`"]),
        case("grounding: wrong type on line 2", 1, grounding(&["--data", "{t}/g/line-two.jsonl"]), &["line-two.jsonl", "line 2", "invalid type"]),
        case("grounding: image file missing", 1, grounding(&["--data", "{t}/g/image-missing.jsonl"]), &["{t}/g/missing.png", "image file not found"]),
        case("grounding: image not an image", 1, grounding(&["--data", "{t}/g/image-not-image.jsonl"]), &["{t}/g/text.png", "not a JPEG, PNG or WebP"]),
        case("grounding: box outside the image", 1, grounding(&["--data", "{t}/g/box-outside.jsonl"]), &["box-outside.jsonl", "line 1", "no box overlaps"]),
        case("grounding: box reversed", 1, grounding(&["--data", "{t}/g/box-reversed.jsonl"]), &["box-reversed.jsonl", "line 1", "x0 < x1"]),
        case("grounding: box of three numbers", 1, grounding(&["--data", "{t}/g/box-three.jsonl"]), &["box-three.jsonl", "line 1"]),
        case("grounding: span outside the caption", 1, grounding(&["--data", "{t}/g/span-outside.jsonl"]), &["span-outside.jsonl", "span [1, 40] is out of range"]),
        case("grounding: span a string", 1, grounding(&["--data", "{t}/g/span-string.jsonl"]), &["span-string.jsonl", "line 1", "invalid type"]),
        case("grounding: --data with --format coco", 1, grounding(&["--format", "coco", "--data", "{t}/g/good.jsonl"]), &["--data does not apply to --format coco"]),
        case("grounding: --format coco without its files", 1, grounding(&["--format", "coco"]), &["--format coco needs", "--annotations"]),
        case("grounding: --images with jsonl", 1, grounding(&["--data", "{t}/g/good.jsonl", "--images", "{t}"]), &["--images does not apply to --format jsonl"]),
        case("grounding: --method unknown", 2, grounding(&["--data", "{t}/g/good.jsonl", "--method", "gradcam"]), &["--method", "gradcam"]),
        case("grounding: --image-layer 9", 1, grounding(&["--data", "{t}/g/good.jsonl", "--image-layer", "9"]), &["image layer 9 is out of range"]),
        case("grounding: model config not JSON", 1, grounding(&["--data", "{t}/g/good.jsonl", "--model", "{t}/m-config-not-json"]), &["config.json", "not valid JSON"]),
        // --- serve: startup arguments (must fail before listening) ---
        case("serve: --addr not an address", 2, serve(&["--addr", "notanaddr"]), &["--addr", "notanaddr"]),
        case("serve: --addr port 99999", 2, serve(&["--addr", "127.0.0.1:99999"]), &["--addr", "127.0.0.1:99999"]),
        case("serve: --addr already in use", 1, serve(&["--addr", "127.0.0.1:{port}"]), &["127.0.0.1:{port}", "in use"]),
        case("serve: --max-upload-mb 0", 1, serve(&["--max-upload-mb", "0"]), &["--max-upload-mb"]),
        case("serve: --max-upload-mb 5000", 1, serve(&["--max-upload-mb", "5000"]), &["--max-upload-mb"]),
        case("serve: --max-upload-mb negative", 2, serve(&["--max-upload-mb=-1"]), &["--max-upload-mb", "-1"]),
        case("serve: --examples missing directory", 1, serve(&["--examples", "{t}/no-examples"]), &["{t}/no-examples", "No such file"]),
        case("serve: --examples data.jsonl not JSON", 1, serve(&["--examples", "{t}/ex-not-json"]), &["ex-not-json/data.jsonl", "line 1", "not JSON"]),
        case("serve: --examples image missing", 1, serve(&["--examples", "{t}/ex-missing-image"]), &["{t}/ex-missing-image/nope.png", "No such file"]),
        case("serve: --examples without examples", 1, serve(&["--examples", "{t}/ex-empty"]), &["ex-empty/data.jsonl", "no examples"]),
        case("serve: --examples image not an image", 1, serve(&["--examples", "{t}/ex-not-image"]), &["data.jsonl", "not a JPEG, PNG or WebP"]),
        case("serve: model config not JSON", 1, serve(&["--model", "{t}/m-config-not-json"]), &["config.json", "not valid JSON"]),
        case("serve: NaN weight", 1, serve(&["--model", "{t}/m-nan-weight"]), &["vision_model.encoder.layers.1.mlp.fc1.weight", "NaN"]),
    ];
    if !cfg!(feature = "cuda") {
        v.push(case("flags: --device cuda:0 without CUDA", 2, explain(&["--device", "cuda:0"]), &["--device", "built without CUDA"]));
    }
    v
}

/// The scratch directory with every input built, and a loopback port held busy.
fn setup(tag: &str) -> (Scratch, Ctx, std::net::TcpListener) {
    let t = std::env::temp_dir().join(format!("pairlens-bad-input-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&t);
    std::fs::create_dir_all(&t).unwrap();
    build_inputs(&t);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    (Scratch(t.clone()), Ctx { t, port }, busy)
}

#[test]
fn bad_inputs_fail_cleanly() {
    let (_scratch, cx, _busy) = setup("matrix");
    let mut cases = cases();
    // A file this user cannot read (root reads everything, so the case needs another user).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let p = cx.t.join("unreadable.png");
        std::fs::write(&p, png(4, 4, 4)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        cases.push(case(
            "image: unreadable",
            1,
            explain(&["--image", "{t}/unreadable.png"]),
            &["{t}/unreadable.png", "Permission denied"],
        ));
    } else {
        eprintln!("running as root: the unreadable-file case is skipped");
    }
    run_matrix(&cx, &cases);
}

/// The bound is meaningful: the README's most expensive explanation (built-in model, layers
/// 1/1) stays under it, and it is measured the same way as the cases.
#[test]
fn normal_run_fits_the_bound() {
    let (_scratch, cx, _busy) = setup("normal");
    let args: Vec<OsString> = [
        "explain",
        "--image",
        "examples/mosaics/00000.png",
        "--caption",
        "a running shoe next to a boot and a pair of trousers beside a blouse",
        "--text-layer",
        "1",
        "--image-layer",
        "1",
        "--span",
        "2:4",
        "--box",
        "0,8,31,25",
    ]
    .iter()
    .map(|a| {
        a.replace("examples/", &format!("{}/examples/", repo().display()))
            .into()
    })
    .collect();
    let o = run(&args, &cx.t.join("logs"), "normal");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    eprintln!(
        "normal explain (built-in, layers 1/1): peak RSS {} KiB sampled, {} KiB from wait4, {:.2} s",
        o.sampled_rss_kb, o.max_rss_kb, o.seconds
    );
    assert!(
        o.killed.is_none() && o.max_rss_kb < MAX_RSS_KB,
        "{} KiB",
        o.max_rss_kb
    );
}

// ---------------------------------------------------------------------------------------------
// Defects the matrix found, one test each (with its own scratch directory), named by what used
// to go wrong.
// ---------------------------------------------------------------------------------------------

/// Run one case with its own scratch directory.
fn alone(tag: &str, c: Case) {
    let (_scratch, cx, _busy) = setup(tag);
    run_matrix(&cx, &[c]);
}

/// One test per former defect: `regression! { test_name, "what went wrong", case(…) }`.
macro_rules! regression {
    ($name:ident, $was:literal, $case:expr) => {
        #[doc = $was]
        #[test]
        fn $name() {
            alone(stringify!($name), $case);
        }
    };
}

/// `explain` with a caption that is not UTF-8 (only an `OsString` can carry it).
fn caption_with_bad_bytes() -> Case {
    use std::os::unix::ffi::OsStringExt;
    let mut c = case(
        "flags: --caption not UTF-8",
        2,
        explain(&["--caption", "X"]),
        &["--caption", "UTF-8"],
    );
    *c.args.iter_mut().find(|a| *a == "X").unwrap() =
        OsString::from_vec(b"a \xff\xfe dog".to_vec());
    c
}

// Memory and hangs: files that are not regular files are read as if they were.
regression! { image_dev_zero, "was: --image /dev/zero reads without bound (GBs of RSS in seconds)",
case("image: /dev/zero", 1, explain(&["--image", "/dev/zero"]), &["/dev/zero", "not a regular file"]) }
regression! { image_fifo, "was: --image naming a FIFO blocks forever waiting for a writer",
case("image: a FIFO", 1, explain(&["--image", "{t}/fifo.png"]), &["{t}/fifo.png", "not a regular file"]) }
regression! { serve_example_dev_zero, "was: serve --examples whose data.jsonl names /dev/zero reads without bound",
case("serve: --examples image /dev/zero", 1, serve(&["--examples", "{t}/ex-dev-zero"]), &["/dev/zero", "not a regular file"]) }
// Messages that do not name the flag.
regression! { negative_text_layer, "was: --text-layer -1 is reported as an unexpected argument '-1', naming no flag",
case("flags: --text-layer -1", 2, explain(&["--text-layer", "-1"]), &["--text-layer", "-1"]) }
regression! { negative_steps, "was: --steps -3 is reported as an unexpected argument '-3', naming no flag",
case("flags: --steps -3", 2, explain(&["--steps", "-3"]), &["--steps", "-3"]) }
regression! { caption_not_utf8, "was: a caption that is not UTF-8 gets clap's generic message, naming no flag",
caption_with_bad_bytes() }
// Misleading messages.
regression! { png_is_a_file, "was: --png naming an existing file fails after the work with `File exists`",
case("output: --png an existing file", 1, explain(&["--png", "{t}/ok.png"]), &["{t}/ok.png", "not a directory"]) }
regression! { grounding_out_is_a_file, "was: eval-grounding --out naming an existing file says `File exists`",
case("grounding: --out an existing file", 1, grounding(&["--data", "{t}/g/good.jsonl", "--out", "{t}/ok.png"]), &["{t}/ok.png", "not a directory"]) }
// Bad input accepted (exit 0).
regression! { negative_layer_norm_eps, "was: a negative layer_norm_eps in config.json is accepted (exit 0)",
case("model: negative layer_norm_eps", 1, explain(&["--model", "{t}/m-eps-negative"]), &["config.json", "layer_norm_eps"]) }
regression! { grounding_empty_data, "was: eval-grounding on an empty data file evaluates nothing and exits 0",
case("grounding: empty data file", 1, grounding(&["--data", "{t}/g/empty.jsonl"]), &["{t}/g/empty.jsonl"]) }
regression! { grounding_limit_zero, "was: eval-grounding --limit 0 evaluates nothing and exits 0",
case("grounding: --limit 0", 1, grounding(&["--data", "{t}/g/good.jsonl", "--limit", "0"]), &["--limit"]) }
