//! The benchmark client's own CPU use, from `/proc/self/stat`.
//!
//! A closed-loop benchmark on the same machine as the servers competes with them for
//! cores; reporting the client's user + system time over the measured window (as a
//! percentage of one core) tells the reader whether the client, not the cluster, was
//! the bottleneck. Linux only; elsewhere the sample is `None` and the report says so.
//!
//! The per-process (all threads) `utime` and `stime` fields are in clock ticks of
//! `USER_HZ`, which Linux fixes at 100 on every architecture it exposes to user space
//! (`getconf CLK_TCK`); reading it through `sysconf` would need `unsafe`.

use std::time::Duration;

/// Linux's `USER_HZ`: the unit of `utime` and `stime` in `/proc/<pid>/stat`.
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// Where the process's own counters are.
const PROC_SELF_STAT: &str = "/proc/self/stat";
/// 0-based positions of `utime` and `stime` among the fields after `(comm)`
/// (fields 14 and 15 of proc(5), counting `pid` as 1).
const UTIME_FIELD: usize = 11;
const STIME_FIELD: usize = 12;

/// User + system CPU time this process has used so far, or `None` when
/// `/proc/self/stat` cannot be read or parsed.
pub fn process_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string(PROC_SELF_STAT).ok()?;
    parse_stat(&text)
}

/// User + system time from the text of a `/proc/<pid>/stat` file.
fn parse_stat(text: &str) -> Option<Duration> {
    // The command name may contain spaces and parentheses; it ends at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(UTIME_FIELD)?.parse().ok()?;
    let stime: u64 = fields.get(STIME_FIELD)?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(
        ticks.checked_mul(1_000)? / CLOCK_TICKS_PER_SEC,
    ))
}

/// `cpu` as a percentage of one core over `wall` (200 % = two cores busy).
pub fn percent_of_one_core(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    let pct = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    (pct * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_the_command_name() {
        // From a real /proc/<pid>/stat, with a command name that contains ") (".
        let line = "4242 (baton (x) y) S 1 4242 4242 34816 4242 4194304 1507 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 1234567 890 18446744073709551615";
        assert_eq!(parse_stat(line), Some(Duration::from_millis(3_250)));
    }

    #[test]
    fn truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat("4242 (baton) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis here"), None);
        assert_eq!(
            parse_stat("1 (x) S 1 1 1 1 1 1 1 1 1 1 ab 7 0"),
            None,
            "utime is not a number"
        );
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let before = process_cpu_time().expect("linux /proc/self/stat");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = process_cpu_time().expect("linux /proc/self/stat");
        assert!(after >= before);
    }

    #[test]
    fn percent_is_relative_to_one_core() {
        let s = Duration::from_secs;
        assert_eq!(percent_of_one_core(s(5), s(10)), 50.0);
        assert_eq!(percent_of_one_core(s(15), s(10)), 150.0);
        assert_eq!(percent_of_one_core(s(1), Duration::ZERO), 0.0);
    }
}
