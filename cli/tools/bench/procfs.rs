//! What the bench reads from Linux's /proc: a process's resident memory and CPU time, and this
//! process's open-file limit.
//!
//! CPU time comes from `/proc/PID/stat` in clock ticks; Linux reports them at USER_HZ, which is
//! 100 on every architecture it supports, so a tick is 10 ms.

use std::io;

/// Clock ticks per second in /proc (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident memory of process `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| invalid(format!("no VmRSS line in /proc/{pid}/status")))
}

/// CPU time (user + system) process `pid` (this process for `None`) has used, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> io::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path)?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    // utime and stime are fields 14 and 15, so the 12th and 13th after the name.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid(format!("unexpected format of {path}")))?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut tick_field = || fields.next().and_then(|field| field.parse::<u64>().ok());
    match (tick_field(), tick_field()) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / TICKS_PER_SECOND),
        _ => Err(invalid(format!("unexpected format of {path}"))),
    }
}

/// This process's open-file limit: (soft, hard); `None` stands for unlimited.
pub fn open_files_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or_else(|| invalid("no \"Max open files\" in /proc/self/limits".to_string()))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let mut limit = || match values.next() {
        Some("unlimited") => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("unexpected limit \"{value}\""))),
        None => Err(invalid("short \"Max open files\" line".to_string())),
    };
    Ok((limit()?, limit()?))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_bytes(std::process::id()).expect("own VmRSS") > 0);
        assert!(cpu_seconds(None).expect("own CPU time") >= 0.0);
        let (soft, hard) = open_files_limit().expect("own limits");
        assert!(soft.unwrap_or(u64::MAX) <= hard.unwrap_or(u64::MAX));
    }
}
