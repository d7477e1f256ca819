//! Zero-copy weights: f32 tensors whose memory is the checkpoint file's own pages.
//!
//! Copying a 600 MB checkpoint into fresh memory costs ~0.3 s, nearly all of it the kernel
//! faulting in and zeroing anonymous pages; PyTorch avoids that by computing straight from the
//! file's mapping. candle's CPU tensors own a `Vec<f32>`, and a `Vec` may only hold memory its
//! global allocator hands out and takes back. [`MappingAllocator`] is the system allocator plus
//! private file mappings it never frees, so a binary that installs it
//! (`#[global_allocator] static A: MappingAllocator = MappingAllocator;`) gets weights backed by
//! the file; without it, loading copies as before (`installed()` is false).
//!
//! Mappings are private (copy-on-write: writing to a weight never changes the file) and stay
//! until the process exits; their pages are clean page-cache pages the kernel can reclaim. As
//! with every mapped safetensors loader, a checkpoint rewritten in place while in use is the
//! caller's problem.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most file mappings a process can register (each loaded shard takes one).
const MAX_MAPPINGS: usize = 256;

static STARTS: [AtomicUsize; MAX_MAPPINGS] = [const { AtomicUsize::new(0) }; MAX_MAPPINGS];
static ENDS: [AtomicUsize; MAX_MAPPINGS] = [const { AtomicUsize::new(0) }; MAX_MAPPINGS];
/// Registered mappings; slots below it are written before it is raised (release/acquire).
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Serialises registration (rare); the allocator itself only reads.
static REGISTER: Mutex<()> = Mutex::new(());
/// Set by the first allocation through [`MappingAllocator`]: it is the global allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, except that memory inside a registered file mapping is never freed
/// (and is copied out when a `Vec` over it grows).
pub struct MappingAllocator;

/// Whether [`MappingAllocator`] is this process's global allocator.
fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Whether `ptr` points into a file mapping registered here (a zero-copy weight).
pub fn is_file_backed(ptr: *const u8) -> bool {
    let p = ptr as usize;
    let n = COUNT.load(Ordering::Acquire);
    (0..n).any(|i| STARTS[i].load(Ordering::Relaxed) <= p && p < ENDS[i].load(Ordering::Relaxed))
}

/// Records that allocations come through [`MappingAllocator`] (a read first: the flag's cache
/// line stays shared between cores once set).
fn mark_installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every request goes to `System` except frees of registered mapping memory (ignored: the
// mapping outlives every Vec over it) and growth of it (a fresh `System` block, contents copied).
unsafe impl GlobalAlloc for MappingAllocator {
    /// A block from [`System`]; also records that this allocator is installed.
    ///
    /// # Safety
    ///
    /// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    /// A zeroed block from [`System`]; also records that this allocator is installed.
    ///
    /// # Safety
    ///
    /// As [`GlobalAlloc::alloc_zeroed`]: `layout` has a non-zero size.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract, which `System`
        // shares.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// Returns `ptr` to [`System`], unless it lies in a registered file mapping (never freed).
    ///
    /// # Safety
    ///
    /// As [`GlobalAlloc::dealloc`]: `ptr` was allocated by this allocator with `layout`, and is
    /// not used afterwards.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_file_backed(ptr) {
            // SAFETY: outside every mapping, so `ptr` came from `System` (`alloc`,
            // `alloc_zeroed` or `realloc` below) with `layout`, as the caller guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// [`System`]'s `realloc`, except that a block inside a registered file mapping is copied
    /// into a fresh [`System`] block (the mapping itself is left alone).
    ///
    /// # Safety
    ///
    /// As [`GlobalAlloc::realloc`]: `ptr` was allocated by this allocator with `layout`,
    /// `new_size` is non-zero and, rounded up to `layout.align()`, does not overflow `isize`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_file_backed(ptr) {
            // SAFETY: outside every mapping, so `ptr` came from `System` with `layout`; the
            // caller guarantees the rest of `GlobalAlloc::realloc`'s contract.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `layout.align()` is a valid alignment (it comes from a `Layout`) and the caller
        // guarantees that `new_size` rounded up to it does not overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has the non-zero size `new_size`.
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: `ptr` is valid for `layout.size()` bytes of the mapping, `new` for
            // `new_size` bytes of a fresh block; the two cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

/// A whole file mapped privately and registered with [`MappingAllocator`]; hands out each
/// byte range at most once, so no two `Vec`s alias.
pub(crate) struct MappedFile {
    base: usize,
    len: usize,
    taken: Mutex<Vec<Range<usize>>>,
}

impl MappedFile {
    /// Maps `file` (`len` bytes) when [`MappingAllocator`] is installed and a slot is free;
    /// `None` otherwise (the caller copies instead).
    #[cfg(unix)]
    pub fn map(file: &std::fs::File, len: usize) -> Option<MappedFile> {
        use std::os::unix::io::AsRawFd;
        if !installed() || len == 0 {
            return None;
        }
        let _guard = REGISTER.lock().ok()?;
        let slot = COUNT.load(Ordering::Acquire);
        if slot >= MAX_MAPPINGS {
            return None;
        }
        // SAFETY: a fresh private mapping of an open file; nothing else refers to it yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let base = ptr as usize;
        STARTS[slot].store(base, Ordering::Relaxed);
        ENDS[slot].store(base + len, Ordering::Relaxed);
        COUNT.store(slot + 1, Ordering::Release);
        Some(MappedFile {
            base,
            len,
            taken: Mutex::new(Vec::new()),
        })
    }

    #[cfg(not(unix))]
    pub fn map(_file: &std::fs::File, _len: usize) -> Option<MappedFile> {
        None
    }

    /// `count` little-endian f32 values at byte `offset` as a `Vec` over the mapping, or `None`
    /// when the range is misaligned, out of the file, empty or already handed out.
    #[cfg(target_endian = "little")]
    pub fn f32s(&self, offset: usize, count: usize) -> Option<Vec<f32>> {
        let bytes = offset..offset.checked_add(count.checked_mul(4)?)?;
        let ptr = self.base + offset;
        if count == 0 || bytes.end > self.len || !ptr.is_multiple_of(std::mem::align_of::<f32>()) {
            return None;
        }
        let mut taken = self.taken.lock().ok()?;
        if taken
            .iter()
            .any(|r| r.start < bytes.end && bytes.start < r.end)
        {
            return None;
        }
        taken.push(bytes);
        // SAFETY: the range is inside a live, registered, writable private mapping, aligned for
        // f32, handed out once; the global allocator never frees it and copies it out on growth,
        // so the Vec owns it as if allocated. Every bit pattern is a valid f32.
        Some(unsafe { Vec::from_raw_parts(ptr as *mut f32, count, count) })
    }

    #[cfg(not(target_endian = "little"))]
    pub fn f32s(&self, _offset: usize, _count: usize) -> Option<Vec<f32>> {
        None
    }
}

#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: MappingAllocator = MappingAllocator;

#[cfg(all(test, unix, target_endian = "little"))]
mod tests {
    use super::*;

    fn scratch_file(tag: &str, values: &[f32]) -> (std::path::PathBuf, std::fs::File) {
        let path =
            std::env::temp_dir().join(format!("pairlens-mapped-{tag}-{}", std::process::id()));
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        (path, file)
    }

    #[test]
    fn vecs_over_the_file_read_it_and_never_write_it() {
        assert!(installed());
        let values: Vec<f32> = (0..4096).map(|i| i as f32 * 0.5).collect();
        let (path, file) = scratch_file("rw", &values);
        let m = MappedFile::map(&file, values.len() * 4).expect("mapped");
        let mut a = m.f32s(4 * 10, 100).expect("aligned range");
        assert!(is_file_backed(a.as_ptr() as *const u8));
        assert_eq!(a[..], values[10..110]);
        // Copy-on-write: the file keeps its bytes.
        a[0] = -1.0;
        // Growing copies the Vec out of the mapping, contents kept.
        a.push(7.0);
        assert!(!is_file_backed(a.as_ptr() as *const u8));
        assert_eq!((a[0], a[1], a[100]), (-1.0, values[11], 7.0));
        drop(a);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk[40..44], values[10].to_le_bytes());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn each_byte_is_handed_out_once_and_aligned() {
        let (path, file) = scratch_file("once", &[1.0; 64]);
        let m = MappedFile::map(&file, 256).expect("mapped");
        let a = m.f32s(0, 8).expect("first");
        assert!(m.f32s(28, 2).is_none(), "overlaps the first");
        assert!(m.f32s(2, 4).is_none(), "misaligned");
        assert!(m.f32s(200, 100).is_none(), "past the end");
        assert!(m.f32s(64, 0).is_none(), "empty");
        let b = m.f32s(32, 8).expect("adjacent, disjoint");
        assert_eq!((a.len(), b.len()), (8, 8));
        drop((a, b));
        let _ = std::fs::remove_file(&path);
    }
}
