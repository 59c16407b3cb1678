//! The standard `process_*` metrics of Prometheus client libraries, read from `/proc` at each
//! scrape (Linux; elsewhere the collector writes nothing).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one scrape reads about this process.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: u64,
}

/// Writes the `process_*` series on each scrape.
#[derive(Debug)]
pub(super) struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(sample) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        let descriptor = encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?;
        cpu.encode(descriptor)?;
        let measures = [
            (
                "process_resident_memory",
                "Resident memory size.",
                Unit::Bytes,
                sample.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size.",
                Unit::Bytes,
                sample.virtual_bytes as f64,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch.",
                Unit::Seconds,
                sample.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in measures {
            let gauge = ConstGauge::new(value);
            let descriptor =
                encoder.encode_descriptor(name, help, Some(&unit), gauge.metric_type())?;
            gauge.encode(descriptor)?;
        }
        let counts = [
            (
                "process_open_fds",
                "Open file descriptors.",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Most file descriptors the process may open (its soft limit).",
                sample.max_fds,
            ),
            (
                "process_threads",
                "Operating system threads.",
                sample.threads,
            ),
        ];
        for (name, help, value) in counts {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let descriptor = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(descriptor)?;
        }
        Ok(())
    }
}

/// This process's figures, or `None` where `/proc` cannot be read.
fn read() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let mut sample = parse(&stat, &status, &boot)?;
    sample.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    sample.max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?.0;
    Some(sample)
}

/// The figures of `/proc/self/stat`, `/proc/self/status` and `/proc/stat` (for the boot time).
fn parse(stat: &str, status: &str, boot: &str) -> Option<Sample> {
    // The command name, in parentheses, may hold spaces: fields are counted after its end.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // stat(5) numbers fields from 1 with the pid; `fields[0]` is field 3 (the state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let kib = |key: &str| {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        line.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    let boot_time: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Sample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / TICKS_PER_SECOND,
        resident_bytes: kib("VmRSS:")? * 1024,
        virtual_bytes: kib("VmSize:")? * 1024,
        threads: status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))?
            .trim()
            .parse()
            .ok()?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / TICKS_PER_SECOND,
        open_fds: 0,
        max_fds: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_figures_of_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (iso gate) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 12300 999 111 18446744073709551615";
        let status = "Name:\tisogate\nVmSize:\t  123456 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let sample = parse(stat, status, boot).unwrap();
        assert_eq!(
            sample,
            Sample {
                cpu_seconds: 3.0,
                resident_bytes: 10240 * 1024,
                virtual_bytes: 123456 * 1024,
                threads: 7,
                start_time_seconds: 1_700_000_123.0,
                open_fds: 0,
                max_fds: 0,
            }
        );
    }

    #[test]
    fn a_truncated_stat_reads_as_nothing() {
        assert_eq!(
            parse("4242 (isogate) S 1 2", "VmRSS: 1 kB", "btime 1"),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads() {
        let sample = read().unwrap();
        assert!(sample.resident_bytes > 0 && sample.threads >= 1 && sample.open_fds >= 3);
        assert!(sample.max_fds >= sample.open_fds);
        assert!(sample.start_time_seconds > 1_600_000_000.0);
    }
}
