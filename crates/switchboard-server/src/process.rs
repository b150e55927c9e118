//! The standard Prometheus process metrics (`process_*`), read from `/proc/self` when
//! `/metrics` is scraped. Linux only; elsewhere they are absent. A value that cannot be read
//! is left out rather than reported wrong.

/// The kernel's clock tick for `/proc` times (`USER_HZ`): 100 on every Linux architecture
/// Rust supports (it is part of the kernel's ABI; Prometheus' own Go client assumes it too).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const USER_HZ: f64 = 100.0;

/// Appends the process metrics to `out`.
pub(crate) fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    {
        use std::fmt::Write as _;
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        if let Some(kb) = read("/proc/self/status").and_then(|s| status_rss_kb(&s)) {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                (kb * 1024) as f64,
            );
        }
        if let Some(st) = stat {
            gauge(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                (st.utime + st.stime) as f64 / USER_HZ,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                dir.count() as f64,
            );
        }
        if let Some(max) = read("/proc/self/limits").and_then(|s| max_open_files(&s)) {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                max as f64,
            );
        }
        let boot = read("/proc/stat").and_then(|s| boot_time(&s));
        if let (Some(st), Some(boot)) = (stat, boot) {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                boot as f64 + st.starttime as f64 / USER_HZ,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Stat {
    utime: u64,
    stime: u64,
    /// Since boot.
    starttime: u64,
}

/// Parses `/proc/PID/stat` (`proc(5)`): the command name is in parentheses and may itself
/// hold spaces and parentheses, so fields are counted from the last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(s: &str) -> Option<Stat> {
    let (_, rest) = s.rsplit_once(')')?;
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// `VmRSS` of `/proc/PID/status`, in KiB.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn status_rss_kb(s: &str) -> Option<u64> {
    let v = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    v.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The soft limit of `Max open files` in `/proc/PID/limits` (`None` when unlimited).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn max_open_files(s: &str) -> Option<u64> {
    let v = s.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    v.split_whitespace().next()?.parse().ok()
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn boot_time(s: &str) -> Option<u64> {
    let v = s.lines().find_map(|l| l.strip_prefix("btime "))?;
    v.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (sw (x) y) S 1 4242 4242 0 -1 4194560 1302 0 0 0 250 31 0 0 20 0 9 0 123456 1000000 2048 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 250,
                stime: 31,
                starttime: 123_456
            })
        );
        assert_eq!(parse_stat("4242 (sw) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);

        let status = "Name:\tswitchboard\nVmHWM:\t   20000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(status_rss_kb(status), Some(12_345));
        assert_eq!(status_rss_kb("Name:\tx\n"), None);

        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63204                63204                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);

        let proc_stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1796500000\nprocesses 7\n";
        assert_eq!(boot_time(proc_stat), Some(1_796_500_000));
        assert_eq!(boot_time("cpu 1\n"), None);
    }
}
