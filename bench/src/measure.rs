//! Running an operation from concurrent clients for a while, and what came of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The latencies of every operation of one run, and how long the run took.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    /// CPU time this process's threads took while the operations ran, by thread name (empty
    /// where /proc is not there). Less noisy than a rate on a shared machine: a thread's CPU per
    /// operation moves only when its work does.
    pub cpu: BTreeMap<String, Duration>,
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

    /// Microseconds of CPU per operation that the threads named `name` took.
    pub fn cpu_us_per_op(&self, name: &str) -> Option<f64> {
        let cpu = self.cpu.get(name)?;
        (self.ops() > 0).then(|| cpu.as_secs_f64() * 1e6 / self.ops() as f64)
    }

    pub fn json(&self) -> serde_json::Value {
        let cpu: serde_json::Map<String, serde_json::Value> =
            self.cpu.keys().filter_map(|k| Some((k.clone(), round(self.cpu_us_per_op(k)?).into()))).collect();
        serde_json::json!({
            "ops": self.ops(),
            "per_sec": round(self.per_sec()),
            "p50_ms": round(self.quantile_ms(0.5)),
            "p99_ms": round(self.quantile_ms(0.99)),
            "cpu_us_per_op": cpu,
        })
    }
}

/// CPU time so far of this process's threads, summed by thread name, from Linux's
/// `/proc/self/task/*/stat` (in USER_HZ ticks, 100 a second). Empty where there is no /proc.
pub fn thread_cpu() -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `tid (name) state ppid ...`: the name may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state is field 0, utime 11 and stime 12.
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
        *out.entry(stat[open + 1..close].to_string()).or_default() += cpu;
    }
    out
}

/// What each thread name took between two readings of [`thread_cpu`].
fn cpu_between(before: &BTreeMap<String, Duration>, after: BTreeMap<String, Duration>) -> BTreeMap<String, Duration> {
    after
        .into_iter()
        .map(|(name, t)| {
            let was = before.get(&name).copied().unwrap_or_default();
            (name, t.saturating_sub(was))
        })
        .filter(|(_, t)| !t.is_zero())
        .collect()
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
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = thread_cpu();
    let mut out = Samples::default();
    for t in tasks {
        let latencies: Vec<Duration> = t.await.map_err(|e| e.to_string())??;
        out.latencies.extend(latencies);
    }
    out.elapsed = Instant::now().saturating_duration_since(measure_from);
    out.cpu = cpu_between(&cpu_before, thread_cpu());
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
    let threads: Vec<std::thread::JoinHandle<_>> = (0..clients)
        .map(|c| {
            let op = op.clone();
            // Named, so that neither the CPU figures nor a profile mix these with the server's.
            std::thread::Builder::new().name("baseline".into()).spawn(move || {
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
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start a baseline thread: {e}"))?;
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
        let s = Samples {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            elapsed: Duration::from_secs(2),
            ..Samples::default()
        };
        assert_eq!(s.quantile_ms(0.5), 50.0);
        assert_eq!(s.quantile_ms(0.99), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
        assert_eq!(s.per_sec(), 50.0);
    }
}
