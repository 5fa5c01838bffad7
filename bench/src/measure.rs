//! Running an operation from concurrent clients for a while, and what came of it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The latencies of every operation of one run, and how long the run took.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Samples {
    pub fn ops(&self) -> usize {
        self.latencies.len()
    }

    pub fn per_sec(&self) -> f64 {
        self.ops() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile in milliseconds (nearest rank).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1e3
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.ops(),
            "per_sec": round(self.per_sec()),
            "p50_ms": round(self.quantile_ms(0.5)),
            "p99_ms": round(self.quantile_ms(0.99)),
        })
    }
}

pub fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 { x.round() } else { (x * 1000.0).round() / 1000.0 }
}

/// What is discarded at the start of each run: connections open, caches fill.
const WARM_UP: Duration = Duration::from_millis(300);

/// `clients` tasks each calling `op(client, i)` for i = 0, 1, ... until `run` has passed after
/// the warm-up. The first failure stops the benchmark: figures with errors in them mean nothing.
pub async fn clients<F, Fut>(clients: usize, run: Duration, op: F) -> Result<Samples, String>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let (measure_from, end) = (start + WARM_UP, start + WARM_UP + run);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        return Ok::<_, String>(latencies);
                    }
                    op(c, i).await?;
                    if t >= measure_from {
                        latencies.push(t.elapsed());
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let mut out = Samples::default();
    for t in tasks {
        let latencies: Vec<Duration> = t.await.map_err(|e| e.to_string())??;
        out.latencies.extend(latencies);
    }
    out.elapsed = Instant::now().saturating_duration_since(measure_from);
    Ok(out)
}

/// The same for blocking operations, on `clients` threads: the baselines.
pub fn threads<F>(clients: usize, run: Duration, op: F) -> Result<Samples, String>
where
    F: Fn(usize, u64) -> Result<(), String> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let (measure_from, end) = (start + WARM_UP, start + WARM_UP + run);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let op = op.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut i = 0;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        return Ok::<_, String>(latencies);
                    }
                    op(c, i)?;
                    if t >= measure_from {
                        latencies.push(t.elapsed());
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let mut out = Samples::default();
    for t in threads {
        out.latencies.extend(t.join().map_err(|_| "a baseline thread panicked".to_string())??);
    }
    out.elapsed = Instant::now().saturating_duration_since(measure_from);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s = Samples { latencies: (1..=100).map(Duration::from_millis).collect(), elapsed: Duration::from_secs(2) };
        assert_eq!(s.quantile_ms(0.5), 50.0);
        assert_eq!(s.quantile_ms(0.99), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
        assert_eq!(s.per_sec(), 50.0);
    }
}
