//! What the nodes of a local cluster spend: CPU time, bytes handed to the disk, and
//! resident memory, read from `/proc/<pid>/` before and after each run.

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux
/// architecture this runs on; it is part of the kernel's ABI, unlike `CONFIG_HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of every node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// CPU seconds (user and system), summed over the nodes.
    pub cpu_seconds: f64,
    /// Bytes the nodes caused to be written to storage, summed.
    pub write_bytes: u64,
    /// Resident memory of each node, in KiB.
    pub rss_kib: Vec<u64>,
}

impl Sample {
    /// Reads every process in `pids`; a process that cannot be read counts as zero.
    pub(crate) fn of(pids: &[u32]) -> Sample {
        let mut sample = Sample::default();
        for &pid in pids {
            sample.cpu_seconds += cpu_seconds(pid).unwrap_or(0.0);
            sample.write_bytes += write_bytes(pid).unwrap_or(0);
            sample.rss_kib.push(rss_kib(pid).unwrap_or(0));
        }
        sample
    }
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past ")".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        // Burn a little CPU so the reading is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let s = Sample::of(&[pid]);
        assert!(s.rss_kib[0] > 0);
        assert!(cpu_seconds(pid).is_some());
        assert!(write_bytes(pid).is_some() || !std::path::Path::new("/proc/self/io").exists());
        let missing = Sample::of(&[u32::MAX]);
        assert_eq!(missing.rss_kib, vec![0]);
        assert_eq!(missing.cpu_seconds, 0.0);
    }
}
