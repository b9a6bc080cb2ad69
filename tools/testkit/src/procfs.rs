//! A process's resources from `/proc/PID`: resident memory, open
//! descriptors and CPU time, read one at a time or sampled over a run, and
//! the peak of its resident memory over a period ([`RssWatch`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Clock ticks per second, the unit of `/proc/PID/stat`'s CPU times.
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    })
}

/// utime + stime of `pid` (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, utime and stime are the 12th and 13th fields (14 and
    // 15 in proc(5)'s numbering).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// [`cpu_seconds`] as a duration.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_seconds(pid).map(Duration::from_secs_f64)
}

/// This process's own CPU time, in seconds.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    rss_kib(pid).map(|k| k * 1024)
}

/// Descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// One reading of `/proc/PID`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the run started.
    pub at: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub cpu_s: f64,
}

/// A reading of `pid` now, timed from `started`; `None` once it is gone.
pub fn sample(pid: u32, started: Instant) -> Option<Sample> {
    Some(Sample {
        at: started.elapsed().as_secs_f64(),
        rss_kib: rss_kib(pid)?,
        fds: open_fds(pid)?,
        cpu_s: cpu_seconds(pid)?,
    })
}

/// Samples `pid` every `every` until `stop`; the samples so far are in
/// `out`.
pub async fn sampler(
    pid: u32,
    started: Instant,
    every: Duration,
    stop: CancellationToken,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Some(s) = sample(pid, started) {
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            }
        }
    }
}

/// The resident memory of a process from now on: read at the start, then
/// sampled every `every` on a thread of its own (so that a busy runtime
/// does not skip samples) until [`RssWatch::stop`] or drop.
pub struct RssWatch {
    before: u64,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
}

impl RssWatch {
    /// Starts watching `pid` (whose RSS must be readable now).
    pub fn start(pid: u32, every: Duration) -> RssWatch {
        let before = rss_bytes(pid).expect("VmRSS of the watched process");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(now) = rss_bytes(pid) {
                    peak = now.max(peak);
                }
                std::thread::sleep(every);
            }
            peak
        });
        RssWatch {
            before,
            stop,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling: (RSS at the start, peak since), in bytes.
    pub fn stop(&mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.sampler.take().map_or(0, |s| s.join().unwrap_or(0));
        (self.before, peak.max(self.before))
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        let s = sample(me, Instant::now()).expect("/proc/self");
        assert!(s.rss_kib > 0 && s.fds >= 3, "{s:?}");
        assert_eq!(rss_bytes(me).map(|b| b % 1024), Some(0));
        assert!(sample(u32::MAX, Instant::now()).is_none());
    }

    #[test]
    fn the_peak_is_at_least_what_was_resident_at_the_start() {
        let mut watch = RssWatch::start(std::process::id(), Duration::from_millis(1));
        let grown = vec![1u8; 8 << 20];
        std::hint::black_box(&grown);
        std::thread::sleep(Duration::from_millis(50));
        let (before, peak) = watch.stop();
        assert!(
            before > 0 && peak >= before + (4 << 20),
            "{before} -> {peak}"
        );
        drop(grown);
    }
}
