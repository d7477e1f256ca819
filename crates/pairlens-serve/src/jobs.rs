//! The bounded job queue. Explanations and uploads are CPU work of up to minutes; without a bound
//! a client (or a script looping on the API) can pile up threads and memory until the machine
//! swaps. So at most `workers` jobs run at once, at most `queued` more wait, and a request beyond
//! that is refused at once with 503 and `Retry-After`.
//!
//! A job whose client goes away stops: the handler's future is dropped when the connection
//! closes, which raises the job's [`Cancel`] flag; the computation asks
//! [`pairlens::Progress::cancelled`] between path points and returns. Its place in the queue is
//! freed only when it has actually stopped, so the bound holds for work in progress, not for
//! requests still connected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Seconds a refused client is asked to wait before trying again.
const RETRY_AFTER_S: u32 = 2;

pub struct Jobs {
    /// Running plus waiting jobs: `workers + queued` permits.
    admitted: Arc<Semaphore>,
    /// Running jobs: `workers` permits.
    running: Arc<Semaphore>,
    /// `workers + queued`.
    capacity: usize,
}

/// Raised when a job's client has gone; read by the computation through [`pairlens::Progress`].
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl pairlens::Progress for Cancel {
    fn start(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn cancelled(&self) -> bool {
        self.is_raised()
    }
}

/// Raises the flag when dropped: when the handler's future is dropped mid-wait, that is the
/// client going away (after the job has finished, raising it changes nothing).
struct RaiseOnDrop(Cancel);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

impl Jobs {
    /// `workers` ≥ 1 jobs at once, `queued` more waiting.
    pub fn new(workers: usize, queued: usize) -> Self {
        let workers = workers.max(1);
        Jobs {
            admitted: Arc::new(Semaphore::new(workers + queued)),
            running: Arc::new(Semaphore::new(workers)),
            capacity: workers + queued,
        }
    }

    /// Jobs running or waiting now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admitted.available_permits()
    }

    /// Runs `work` on a blocking thread when a worker is free, or refuses with 503 when the
    /// queue is full. `work` should stop early, with [`pairlens::Error::Cancelled`], when its
    /// [`Cancel`] is raised.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Cancel) -> Result<T, ApiError> + Send + 'static,
    {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            ApiError::busy(
                "the server is busy: too many explanations are running or waiting; try again shortly",
                RETRY_AFTER_S,
            )
        })?;
        let cancel = Cancel::default();
        let _raise = RaiseOnDrop(cancel.clone());
        // Waiting here is cancelled by dropping this future, which gives the place back.
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the job queue is closed"))?;
        let mut flag = cancel.clone();
        tokio::task::spawn_blocking(move || {
            let result = work(&mut flag);
            drop((running, admitted));
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("the computation failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use std::time::{Duration, Instant};

    /// A job that runs until it is cancelled (or 20 s pass), then reports whether it was.
    fn until_cancelled(
        started: std::sync::mpsc::Sender<()>,
    ) -> impl FnOnce(&mut Cancel) -> Result<bool, ApiError> {
        move |cancel| {
            let _ = started.send(());
            let t = Instant::now();
            while !cancel.is_raised() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(cancel.is_raised())
        }
    }

    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let t = Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_with_retry_after() {
        let jobs = Arc::new(Jobs::new(1, 1));
        let (tx, started) = std::sync::mpsc::channel();
        let running = tokio::spawn({
            let jobs = jobs.clone();
            let tx = tx.clone();
            async move { jobs.run(until_cancelled(tx)).await }
        });
        started.recv().unwrap();
        let waiting = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.run(until_cancelled(tx)).await }
        });
        wait_for("the second job is admitted", || jobs.in_flight() == 2).await;
        let refused = jobs.run(|_| Ok(())).await.unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let response = refused.into_response();
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
        // The waiting request leaves: its place is free at once, and it never runs.
        waiting.abort();
        wait_for("the waiting job's place is freed", || jobs.in_flight() == 1).await;
        running.abort();
        wait_for("the running job stops", || jobs.in_flight() == 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_client_leaves_is_cancelled() {
        let jobs = Arc::new(Jobs::new(1, 0));
        let (tx, started) = std::sync::mpsc::channel();
        let (saw, seen) = std::sync::mpsc::channel();
        let client = tokio::spawn({
            let jobs = jobs.clone();
            async move {
                jobs.run(move |cancel| {
                    let cancelled = until_cancelled(tx)(cancel);
                    let _ = saw.send(cancelled.clone().unwrap_or(false));
                    cancelled
                })
                .await
            }
        });
        started.recv().unwrap();
        client.abort(); // the connection closes: axum drops the handler's future
        assert!(seen.recv_timeout(Duration::from_secs(15)).unwrap());
        wait_for("the place is freed", || jobs.in_flight() == 0).await;
        // And a job that finishes on its own is not cancelled.
        assert!(!jobs.run(|c| Ok(c.is_raised())).await.unwrap());
    }
}
