//! The task (thread) limit the service manager sets: the cgroup's
//! `pids.max` (systemd's `TasksMax`). One thread per connection means the
//! broker must stop taking connections below it, or past it every thread
//! it starts fails, a real client's as much as anyone's.

use std::path::PathBuf;

/// Threads kept for the broker's own (main, router, journal, writer, $SYS,
/// bridges) and for the connections' start-up, below the task limit.
pub const RESERVE: usize = 64;

/// The `pids.max` of the cgroup this process is in; None when it has none
/// or cannot be read.
pub fn task_limit() -> Option<usize> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = pids_max_path(&cgroup)?;
    parse_pids_max(&std::fs::read_to_string(path).ok()?)
}

/// Where the `pids.max` of the cgroup named in `/proc/self/cgroup` is:
/// the pids controller's hierarchy (cgroup v1), else the unified one (v2).
fn pids_max_path(cgroup: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            return Some(
                PathBuf::from("/sys/fs/cgroup/pids")
                    .join(path)
                    .join("pids.max"),
            );
        }
        if controllers.is_empty() {
            unified = Some(PathBuf::from("/sys/fs/cgroup").join(path).join("pids.max"));
        }
    }
    unified
}

/// A `pids.max` file's limit; None for "max".
fn parse_pids_max(text: &str) -> Option<usize> {
    text.trim().parse().ok()
}

/// How many connections may be open at once under a task limit.
pub fn connection_cap(task_limit: Option<usize>) -> Option<usize> {
    task_limit.map(|t| t.saturating_sub(RESERVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_max_of_v1_and_v2() {
        let v1 = "9:pids:/system.slice/midge.service\n0::/system.slice/midge.service\n";
        assert_eq!(
            pids_max_path(v1),
            Some(PathBuf::from(
                "/sys/fs/cgroup/pids/system.slice/midge.service/pids.max"
            ))
        );
        let v2 = "0::/system.slice/midge.service\n";
        assert_eq!(
            pids_max_path(v2),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/midge.service/pids.max"
            ))
        );
        assert_eq!(pids_max_path("1:cpu:/\n"), None);
        assert_eq!(parse_pids_max("1024\n"), Some(1024));
        assert_eq!(parse_pids_max("max\n"), None);
        assert_eq!(connection_cap(Some(1024)), Some(960));
        assert_eq!(connection_cap(Some(10)), Some(0));
        assert_eq!(connection_cap(None), None);
    }
}
