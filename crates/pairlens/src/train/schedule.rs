//! Learning-rate schedule: linear warm-up, then cosine decay to a floor (open_clip's default).

/// `lr(step)` for 0-based optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Peak learning rate, reached at the end of the warm-up.
    pub base_lr: f64,
    /// Floor reached at `total` steps.
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup: u64,
    /// Step at which the cosine decay reaches `min_lr` (warm-up included).
    pub total: u64,
}

impl Schedule {
    /// Warm-up: `base · (step + 1) / warmup` (the first step is not wasted at lr 0).
    /// Then `min + (base − min) · (1 + cos(π · progress)) / 2`, progress 0 → 1 over the
    /// remaining steps; steps past `total` stay at `min_lr`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.base_lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        self.min_lr
            + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
