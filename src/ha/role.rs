//! The role keepalived gives this director, read from the lines of its notify FIFO:
//! `INSTANCE "VI_1" MASTER 100`, `GROUP "G1" BACKUP`, `INSTANCE "VI_1" FAULT 0`. Pure.

/// What this director is in its pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not the master (BACKUP, FAULT, STOP, or not told yet): takes flows from the master and
    /// draws no traffic.
    Backup,
    /// The master: draws the VIPs' traffic and sends its flows.
    Master,
}

impl Role {
    /// `master` or `backup`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Master => "master",
        }
    }
}

/// The role a FIFO line gives, when it is about `instance` (a VRRP instance or sync group);
/// `None` for other lines (other instances, checker lines such as `VS` and `RS`).
pub(crate) fn role_in(line: &str, instance: &str) -> Option<Role> {
    let (kind, rest) = line.trim().split_once(' ')?;
    if kind != "INSTANCE" && kind != "GROUP" {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('"')?;
    let (name, rest) = rest.split_once('"')?;
    if name != instance {
        return None;
    }
    let state = rest.split_whitespace().next()?;
    Some(if state == "MASTER" {
        Role::Master
    } else {
        Role::Backup
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_lines_give_the_role_of_our_instance_only() {
        assert_eq!(
            role_in("INSTANCE \"VI_1\" MASTER 100\n", "VI_1"),
            Some(Role::Master)
        );
        assert_eq!(
            role_in("INSTANCE \"VI_1\" BACKUP 100", "VI_1"),
            Some(Role::Backup)
        );
        assert_eq!(role_in("INSTANCE \"VI_1\" FAULT 0", "VI_1"), Some(Role::Backup));
        assert_eq!(role_in("INSTANCE \"VI_1\" STOP 0", "VI_1"), Some(Role::Backup));
        assert_eq!(role_in("GROUP \"G1\" MASTER", "G1"), Some(Role::Master));
        assert_eq!(role_in("INSTANCE \"VI_2\" MASTER 100", "VI_1"), None);
        assert_eq!(role_in("VS \"10.0.0.1:80\" UP", "VI_1"), None);
        assert_eq!(role_in("INSTANCE VI_1 MASTER", "VI_1"), None);
        assert_eq!(role_in("", "VI_1"), None);
        assert_eq!(role_in("INSTANCE \"VI_1", "VI_1"), None);
    }
}
