//! Progress of long computations, reported by the library and drawn by front ends (the CLI's
//! bar on stderr, a callback in Python), and the way back: a front end whose user has gone
//! (a viewer client that disconnected, Ctrl-C in a notebook) asks the computation to stop.

/// Receives progress of long computations.
pub trait Progress {
    /// A new phase of `total` units of work, named by `label` ("image tokens", "captions").
    fn start(&mut self, label: &str, total: u64);
    /// `done` more units of the current phase are finished.
    fn advance(&mut self, done: u64);
    /// Whether the work is no longer wanted. Long computations ask between units of work and
    /// stop with [`crate::Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// Ignores progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
}
