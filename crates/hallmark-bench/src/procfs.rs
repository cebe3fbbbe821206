//! Memory figures of a process from `/proc/<pid>/status`.

use serde::Serialize;

/// Why a status file could not be read as memory figures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProcStatusError {
    /// A required field is absent (a kernel thread or a zombie has no memory lines).
    #[error("/proc/<pid>/status: field `{0}` is missing")]
    Missing(&'static str),
    /// A field is present but is not `<number> kB`.
    #[error("/proc/<pid>/status: field `{field}` value `{value}` is not `<number> kB`")]
    BadValue { field: &'static str, value: String },
}

/// Resident memory in KiB, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident set now.
    pub vm_rss_kib: u64,
    /// Peak resident set over the process's life.
    pub vm_hwm_kib: u64,
    /// The anonymous part of the resident set (heap, stacks): what the
    /// program allocated, as opposed to mapped files such as its binary.
    pub rss_anon_kib: u64,
}

impl Memory {
    pub fn parse(status: &str) -> Result<Self, ProcStatusError> {
        Ok(Memory {
            vm_rss_kib: field(status, "VmRSS")?,
            vm_hwm_kib: field(status, "VmHWM")?,
            rss_anon_kib: field(status, "RssAnon")?,
        })
    }

    /// Reads `/proc/<pid>/status`.
    pub fn of_pid(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/status");
        let text =
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
        Ok(Self::parse(&text)?)
    }
}

fn field(status: &str, name: &'static str) -> Result<u64, ProcStatusError> {
    let value = status
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key == name).then_some(value.trim())
        })
        .ok_or(ProcStatusError::Missing(name))?;
    value
        .strip_suffix(" kB")
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| ProcStatusError::BadValue {
            field: name,
            value: value.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\thallmark\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   16384 kB\nRssAnon:\t    8192 kB\nRssFile:\t    8192 kB\nThreads:\t3\n";

    #[test]
    fn reads_the_three_figures() {
        assert_eq!(
            Memory::parse(STATUS),
            Ok(Memory {
                vm_rss_kib: 16384,
                vm_hwm_kib: 20480,
                rss_anon_kib: 8192,
            })
        );
    }

    #[test]
    fn each_defect_is_named() {
        let cases: &[(&str, ProcStatusError)] = &[
            (
                "Name:\tkthreadd\nThreads:\t1\n",
                ProcStatusError::Missing("VmRSS"),
            ),
            (
                "VmRSS:\t1 kB\nVmHWM:\t2 kB\n",
                ProcStatusError::Missing("RssAnon"),
            ),
            (
                "VmRSS:\tlots kB\nVmHWM:\t2 kB\nRssAnon:\t1 kB\n",
                ProcStatusError::BadValue {
                    field: "VmRSS",
                    value: "lots kB".into(),
                },
            ),
            (
                "VmRSS:\t12 MB\nVmHWM:\t2 kB\nRssAnon:\t1 kB\n",
                ProcStatusError::BadValue {
                    field: "VmRSS",
                    value: "12 MB".into(),
                },
            ),
            // A field name must match whole, not as a prefix.
            (
                "VmRSSx:\t1 kB\nVmHWM:\t2 kB\nRssAnon:\t1 kB\n",
                ProcStatusError::Missing("VmRSS"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Memory::parse(input).unwrap_err(), *want, "{input:?}");
        }
    }

    #[test]
    fn this_process_has_memory_figures() {
        let m = Memory::of_pid(std::process::id()).unwrap();
        assert!(m.vm_rss_kib > 0);
        assert!(m.vm_hwm_kib >= m.vm_rss_kib);
    }
}
