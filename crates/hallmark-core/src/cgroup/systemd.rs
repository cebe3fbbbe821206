//! Where systemd puts a unit's cgroup.
//!
//! A slice's cgroup nests inside the slices its name is made of:
//! `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`, and the root
//! slice `-.slice` is the hierarchy's root `/`. Runtimes using the systemd
//! cgroup driver (runc, dockerd, containerd, CRI-O) place a container's
//! scope in a slice this way, so its path can be derived without asking
//! systemd. The rules are runc's `ExpandSlice`, which is what creates these
//! cgroups.

/// The root slice, whose cgroup is the hierarchy's root.
pub const ROOT_SLICE: &str = "-.slice";

/// The cgroup path of the systemd slice `slice`: `/` for [`ROOT_SLICE`],
/// else one path component per dash-separated prefix of the name.
///
/// `None` for a name systemd refuses as a slice: no `.slice` suffix, an
/// empty name, a `/`, or a leading, trailing or doubled `-`.
pub fn expand_slice(slice: &str) -> Option<String> {
    let name = slice.strip_suffix(".slice")?;
    if slice == ROOT_SLICE {
        return Some("/".into());
    }
    if name.contains('/') {
        return None;
    }
    let mut path = String::new();
    for (end, _) in name.match_indices('-').chain([(name.len(), "")]) {
        let prefix = &name[..end];
        // An empty component (`-a`, `a--b`, `a-`) ends a prefix in `-`.
        if prefix.is_empty() || prefix.ends_with('-') {
            return None;
        }
        path.push('/');
        path.push_str(prefix);
        path.push_str(".slice");
    }
    Some(path)
}

/// The cgroup path of the unit `unit` (`docker-<id>.scope`, a sub-slice…)
/// placed in `slice`. `None` when the slice name is invalid (see
/// [`expand_slice`]) or `unit` is empty or holds a `/`.
pub fn unit_path(slice: &str, unit: &str) -> Option<String> {
    if unit.is_empty() || unit.contains('/') {
        return None;
    }
    let parent = expand_slice(slice)?;
    Some(if parent == "/" {
        format!("/{unit}")
    } else {
        format!("{parent}/{unit}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("-.slice", Some("/")),
            ("system.slice", Some("/system.slice")),
            ("kubepods.slice", Some("/kubepods.slice")),
            (
                "kubepods-burstable-pod123.slice",
                Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice"),
            ),
            (
                "a-b-c-d.slice",
                Some("/a.slice/a-b.slice/a-b-c.slice/a-b-c-d.slice"),
            ),
            // kubelet writes a pod UID's dashes as `_` so they do not nest.
            (
                "kubepods-pod1_2.slice",
                Some("/kubepods.slice/kubepods-pod1_2.slice"),
            ),
            ("user-1000.slice", Some("/user.slice/user-1000.slice")),
            // Invalid: never a slice systemd creates.
            ("", None),
            (".slice", None),
            ("system", None),
            ("system.scope", None),
            ("system.slice.d", None),
            ("--.slice", None),
            ("-a.slice", None),
            ("a-.slice", None),
            ("a--b.slice", None),
            ("a/b.slice", None),
            ("/system.slice", None),
        ];
        for (input, want) in cases {
            assert_eq!(expand_slice(input).as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn unit_paths() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("-.slice", "crio-abc.scope", Some("/crio-abc.scope")),
            (
                "system.slice",
                "docker-abc.scope",
                Some("/system.slice/docker-abc.scope"),
            ),
            (
                "shop-web.slice",
                "docker-abc.scope",
                Some("/shop.slice/shop-web.slice/docker-abc.scope"),
            ),
            ("a-b.slice", "c.slice", Some("/a.slice/a-b.slice/c.slice")),
            ("a--b.slice", "x.scope", None),
            ("system", "x.scope", None),
            ("system.slice", "", None),
            ("system.slice", "../x.scope", None),
        ];
        for (slice, unit, want) in cases {
            assert_eq!(
                unit_path(slice, unit).as_deref(),
                *want,
                "{slice:?} {unit:?}"
            );
        }
    }
}
