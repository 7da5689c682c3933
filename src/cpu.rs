//! How many CPUs this process may really use: the affinity mask, capped by the container's CPU
//! quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
//!
//! ONNX Runtime sizes its default thread pool from the host's core count, so in a container
//! limited to 2 CPUs on a 64-core host it starts 64 threads that fight over 2 CPUs. We pass an
//! explicit count instead.

use std::path::Path;

/// CPUs available to this process: at least 1.
pub fn available_cpus() -> usize {
    let affinity = affinity_cpus().unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let quota = quota_cpus(Path::new("/sys/fs/cgroup"), Path::new("/proc/self/cgroup"));
    quota.map_or(affinity, |q| q.min(affinity)).max(1)
}

fn affinity_cpus() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and sched_getaffinity writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `set` was filled by the kernel.
    let n = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// The CPU quota of this process's cgroup, rounded up to whole CPUs; `None` when unlimited.
fn quota_cpus(cgroup_root: &Path, proc_cgroup: &Path) -> Option<usize> {
    let membership = std::fs::read_to_string(proc_cgroup).unwrap_or_default();
    // cgroup v2: the line "0::/path"; the limit may sit on any ancestor, the tightest wins.
    if let Some(path) = membership.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut dir = cgroup_root.join(path.trim_start_matches('/'));
        let mut best: Option<usize> = None;
        loop {
            if let Some(q) = std::fs::read_to_string(dir.join("cpu.max")).ok().and_then(|t| parse_cpu_max(&t)) {
                best = Some(best.map_or(q, |b| b.min(q)));
            }
            if dir == cgroup_root || !dir.pop() || !dir.starts_with(cgroup_root) {
                break;
            }
        }
        if best.is_some() {
            return best;
        }
    }
    // cgroup v1: the cpu controller's own hierarchy, at this process's path in it.
    let v1_path = membership
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(':'))
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "cpu"))
        .map(|(_, path)| path.trim_start_matches('/').to_string())
        .unwrap_or_default();
    for mount in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
        for dir in [cgroup_root.join(mount).join(&v1_path), cgroup_root.join(mount)] {
            let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok();
            let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok();
            if let (Some(q), Some(p)) = (quota, period) {
                return parse_v1(&q, &p);
            }
        }
    }
    None
}

/// "max 100000" is unlimited; "150000 100000" is 1.5 CPUs, rounded up to 2.
fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: u64 = parts.next()?.parse().ok()?;
    if quota == "max" || period == 0 {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    usize::try_from(quota.div_ceil(period)).ok().map(|n| n.max(1))
}

fn parse_v1(quota: &str, period: &str) -> Option<usize> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    if quota <= 0 || period <= 0 {
        return None;
    }
    usize::try_from((quota + period - 1) / period).ok().map(|n| n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_parsing() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_v1("-1", "100000"), None);
        assert_eq!(parse_v1("300000", "100000"), Some(3));
    }

    #[test]
    fn quota_from_a_fake_v2_tree_takes_the_tightest_ancestor() {
        let root = std::env::temp_dir().join(format!("onnxrs-cgroup-{}", std::process::id()));
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("a/cpu.max"), "300000 100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        let proc = root.join("proc-cgroup");
        std::fs::write(&proc, "0::/a/b\n").unwrap();
        assert_eq!(quota_cpus(&root, &proc), Some(3));
        std::fs::write(root.join("a/cpu.max"), "max 100000\n").unwrap();
        assert_eq!(quota_cpus(&root, &proc), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn at_least_one() {
        assert!(available_cpus() >= 1);
    }
}
