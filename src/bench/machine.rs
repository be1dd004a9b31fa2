//! The machine under the benchmark: CPU model, load, CPU time of the process and of tract's
//! pool threads, and what tract did with the threads it was given.

use std::fmt::Write as _;

use serde::Serialize;

use pleura::engine::{MULTITHREAD_AVAILABLE, POOL_THREAD_NAME};

/// CPU use of the process during the timed loop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuUse {
    /// Process CPU time over wall time (about 1 when one thread works).
    pub per_wall: f64,
    /// Share of that CPU time spent on tract's pool threads: the work tract parallelised
    /// (0 with one thread).
    pub pool_fraction: f64,
}

/// The backbone's median time on the engine's threads and on one thread, measured
/// interleaved after the timed loop (only when more than one thread was asked for).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ThreadCheck {
    /// Median backbone time on one thread.
    pub one_thread_ms: f64,
    /// Median backbone time on the engine's threads.
    pub threads_ms: f64,
    /// `one_thread_ms / threads_ms` (above 1: the threads help).
    pub speedup: f64,
}

/// How tract used threads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threading {
    /// Threads tract was allowed inside one plan run.
    pub threads: usize,
    /// Whether this build has tract's multithreaded executor (cargo feature `threads`).
    pub multithread_build: bool,
    /// CPU use during the timed loop (Linux).
    pub cpu: Option<CpuUse>,
    /// The backbone on these threads against one thread (more than one thread only).
    pub check: Option<ThreadCheck>,
    /// What that means.
    pub note: String,
}

pub(super) fn threading(
    threads: usize,
    cpu: Option<CpuUse>,
    check: Option<ThreadCheck>,
) -> Threading {
    let mut note = if threads == 1 {
        "one thread, the default (as on a board, whose other cores capture and convert \
         frames): tract runs every op on the calling thread"
            .to_string()
    } else {
        format!(
            "tract-linalg's rayon executor with {threads} threads, shared by all plans: tract \
             splits matrix products of >= 64 panels and depthwise / element-wise ops over \
             >= 32768 values (the early backbone layers); the heads and the small late layers \
             run inline on the calling thread"
        )
    };
    if let (true, Some(c)) = (threads > 1, cpu) {
        // Amdahl: only the pool's share of the work can go faster.
        let bound = 1.0 / ((1.0 - c.pool_fraction) + c.pool_fraction / threads as f64);
        let _ = write!(
            note,
            ". Measured: {:.0}% of the CPU time ran on the pool threads (an upper bound on the \
             work tract parallelised: it includes rayon's idle spinning), so {threads} threads \
             make a frame at most {bound:.2}x faster; CPU/wall {:.2}{}",
            100.0 * c.pool_fraction,
            c.per_wall,
            if c.pool_fraction < 0.05 {
                ": tract barely uses threads for these ops at batch 1"
            } else if c.per_wall < 1.1 {
                " (no idle core: the pool's threads took turns rather than running together)"
            } else {
                ""
            }
        );
    }
    if let Some(c) = check {
        let _ = write!(
            note,
            ". Backbone median with {threads} threads {:.3} ms vs one thread {:.3} ms \
             (interleaved): {:.2}x{}",
            c.threads_ms,
            c.one_thread_ms,
            c.speedup,
            if c.speedup < 1.02 {
                ": tract cannot use more threads profitably for these ops at batch 1 on this \
                 machine"
            } else {
                ""
            }
        );
    }
    Threading {
        threads,
        multithread_build: MULTITHREAD_AVAILABLE,
        cpu,
        check,
        note,
    }
}

/// The first `model name` of `/proc/cpuinfo`, or `unknown`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One-minute load average (Linux), to tell a quiet machine from a busy one.
pub(super) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time so far, in seconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct CpuTimes {
    /// The whole process.
    pub process: f64,
    /// The threads of tract's pool ([`POOL_THREAD_NAME`]).
    pub pool: f64,
}

/// User + system CPU time of this process and of its tract pool threads (Linux; `stat` counts
/// in clock ticks of 1/100 s on every Linux platform).
pub(super) fn cpu_times() -> Option<CpuTimes> {
    let ticks = |stat: &str| -> Option<f64> {
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
    };
    let process = ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)? / 100.0;
    let mut pool = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with(POOL_THREAD_NAME) {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            pool += ticks(&stat).unwrap_or(0.0) / 100.0;
        }
    }
    Some(CpuTimes { process, pool })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readers_give_plausible_values_on_linux() {
        if cfg!(target_os = "linux") {
            let cpu = cpu_times().unwrap();
            assert!(cpu.process >= 0.0 && cpu.pool == 0.0, "{cpu:?}");
            assert!(load_average().unwrap() >= 0.0);
            assert!(!cpu_model().is_empty());
        }
    }
}
