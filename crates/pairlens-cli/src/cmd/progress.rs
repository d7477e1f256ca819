//! A progress bar on stderr that appears only once work has taken over a second, so quick runs
//! stay quiet and long ones show where they are.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pairlens::Progress;

pub struct DelayedBar {
    started: Instant,
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
}

impl DelayedBar {
    pub fn new() -> Self {
        DelayedBar {
            started: Instant::now(),
            bar: None,
            label: String::new(),
            total: 0,
            done: 0,
        }
    }

    fn show(&mut self) {
        let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:32}] {pos}/{len} JVPs {elapsed_precise} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(self.label.clone());
        bar.set_position(self.done);
        self.bar = Some(bar);
    }
}

impl Progress for DelayedBar {
    fn start(&mut self, label: &str, total: u64) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.label = label.to_string();
        self.total = total;
        self.done = 0;
    }

    fn advance(&mut self, done: u64) {
        self.done += done;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.started.elapsed() > Duration::from_secs(1) => self.show(),
            None => {}
        }
    }
}

impl Drop for DelayedBar {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
