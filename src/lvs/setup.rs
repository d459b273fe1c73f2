//! What the host needs for the packet data plane: IP forwarding, the VIP
//! routes into the TUN device, proxy ARP for the VIPs, the policy rules that steer NAT replies
//! back into the TUN, and relaxed reverse-path filtering. With `setup: auto` lbd applies them
//! and undoes them at exit; with `manual` it checks them and prints what is missing; `lbd
//! --check` prints the plan.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
};

use crate::config::{Config, ForwardMethod, Protocol};

pub use crate::config::REPLY_TABLE;
/// Preference of the first reply-steering rule.
const RULE_PREF: u32 = 1000;
/// The MTU of a tunnelled VIP's route: an Ethernet MTU less the outer IPv4 header.
pub const TUNNEL_MTU: u32 = 1480;

/// One step of the setup: a sysctl or an `ip` command, with how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Write `value` to `/proc/sys/<key with dots as slashes>`.
    Sysctl {
        /// e.g. `net.ipv4.ip_forward`.
        key: String,
        /// e.g. `1`.
        value: String,
    },
    /// Run `ip <args>`; undo with `ip <undo>`.
    Ip {
        /// Arguments that apply it.
        args: Vec<String>,
        /// Arguments that remove it.
        undo: Vec<String>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sysctl { key, value } => write!(f, "sysctl -w {key}={value}"),
            Self::Ip { args, .. } => write!(f, "ip {}", args.join(" ")),
        }
    }
}

fn ip(args: &str, undo: &str) -> Step {
    Step::Ip {
        args: args.split_whitespace().map(str::to_owned).collect(),
        undo: undo.split_whitespace().map(str::to_owned).collect(),
    }
}

fn sysctl(key: &str, value: &str) -> Step {
    Step::Sysctl {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// The steps a config needs, in order. The VIPs' routes into the TUN device and their proxy-ARP
/// entries are the `master`'s only: a backup of an `ha:` pair leaves them out, so that only
/// the master draws the VIPs' traffic.
pub fn plan(config: &Config, client_interfaces: &[String], master: bool) -> Vec<Step> {
    let Some(dataplane) = &config.dataplane else {
        return Vec::new();
    };
    let tun = &dataplane.tun;
    let server = dataplane.server_interface.clone().unwrap_or_default();
    let mut vips = BTreeSet::new();
    let mut tunnelled = BTreeSet::new();
    let mut nat_reals: BTreeSet<(Protocol, SocketAddr)> = BTreeSet::new();
    for service in config.services.iter().filter(|service| service.on_packet_plane()) {
        for real in &service.reals {
            match real.forward_in(service) {
                ForwardMethod::Proxy => {}
                ForwardMethod::Nat => {
                    vips.insert(service.listen.ip());
                    nat_reals.insert((service.protocol, real.address));
                }
                ForwardMethod::Dr => {
                    vips.insert(service.listen.ip());
                }
                ForwardMethod::Tun => {
                    vips.insert(service.listen.ip());
                    tunnelled.insert(service.listen.ip());
                }
            }
        }
    }
    if vips.is_empty() {
        return Vec::new();
    }
    let mut steps = vec![
        sysctl("net.ipv4.ip_forward", "1"),
        sysctl("net.ipv4.conf.all.rp_filter", "0"),
        sysctl(&format!("net.ipv4.conf.{tun}.rp_filter"), "0"),
    ];
    if !server.is_empty() {
        // Replies from the VIP (DR, TUN) come back through the server side: loose at most.
        steps.push(sysctl(&format!("net.ipv4.conf.{server}.rp_filter"), "2"));
    }
    for address in vips.iter().filter(|_| master) {
        let vip = host(address);
        // Tunnelled packets grow by the outer header (20 bytes): the VIP's route is that much
        // narrower, so the kernel answers oversize DF packets with "fragmentation needed" and
        // the client's path MTU discovery works (as IPVS's tunnel does).
        let mtu = if tunnelled.contains(address) {
            format!(" mtu {TUNNEL_MTU}")
        } else {
            String::new()
        };
        steps.push(ip(
            &format!("route replace {vip} dev {tun}{mtu}"),
            &format!("route del {vip} dev {tun}"),
        ));
        for interface in client_interfaces {
            steps.push(ip(
                &format!("neigh replace proxy {} dev {interface}", strip(&vip)),
                &format!("neigh del proxy {} dev {interface}", strip(&vip)),
            ));
        }
    }
    for interface in client_interfaces {
        steps.push(sysctl(&format!("net.ipv4.neigh.{interface}.proxy_delay"), "0"));
    }
    if !nat_reals.is_empty() {
        steps.push(ip(
            &format!("route replace default dev {tun} table {REPLY_TABLE}"),
            &format!("route del default dev {tun} table {REPLY_TABLE}"),
        ));
        for (i, (protocol, real)) in nat_reals.iter().enumerate() {
            let iif = if server.is_empty() {
                String::new()
            } else {
                format!("iif {server} ")
            };
            let rule = format!(
                "pref {} {iif}from {} ipproto {protocol} sport {} lookup {REPLY_TABLE}",
                RULE_PREF + i as u32,
                host(&real.ip()),
                real.port()
            );
            steps.push(ip(&format!("rule add {rule}"), &format!("rule del {rule}")));
        }
    }
    steps
}

impl Step {
    /// The `ip` arguments of an `ip` step (empty for a sysctl).
    #[cfg(test)]
    fn args_of(&self) -> Vec<String> {
        match self {
            Self::Ip { args, .. } => args.clone(),
            Self::Sysctl { .. } => Vec::new(),
        }
    }
}

fn host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn strip(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Interfaces that face the clients: every interface but loopback, the TUN device and the
/// server-side interface (proxy ARP for the VIPs goes there).
pub fn client_interfaces(tun: &str, server: Option<&str>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name != "lo" && name != tun && Some(name.as_str()) != server)
        // Bridge ports of the server side belong to it.
        .filter(|name| {
            let master = std::fs::read_link(format!("/sys/class/net/{name}/master")).ok();
            let master = master.and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()));
            master.is_none() || master.as_deref() != server
        })
        .collect();
    names.sort();
    names
}

/// The steps the host does not have yet (for `setup: manual`): sysctls with another value,
/// routes, proxy entries and rules not listed by `ip`.
pub fn missing(steps: &[Step]) -> Vec<Step> {
    steps.iter().filter(|step| !present(step)).cloned().collect()
}

fn present(step: &Step) -> bool {
    match step {
        Step::Sysctl { key, value } => {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            std::fs::read_to_string(path).is_ok_and(|current| current.trim() == value)
        }
        Step::Ip { args, .. } => {
            let Some((list, expected)) = listing_of(args) else {
                return false;
            };
            let Ok(output) = Command::new("ip").args(&list).output() else {
                return false;
            };
            let listing = String::from_utf8_lossy(&output.stdout);
            listing.lines().map(squeeze).any(|line| {
                expected
                    .iter()
                    .all(|fragment| format!(" {line} ").contains(&format!(" {} ", squeeze(fragment))))
            })
        }
    }
}

/// For an `ip` step, the `ip … show` command that lists such objects and the fragments its
/// line for this one contains (`ip rule show` prints the selectors in its own order).
fn listing_of(args: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let owned = |list: &[&str]| list.iter().map(|word| (*word).to_owned()).collect::<Vec<_>>();
    match words.as_slice() {
        ["route", "replace", rest @ ..] => {
            let table = rest
                .iter()
                .position(|word| *word == "table")
                .and_then(|i| rest.get(i + 1));
            let list = match table {
                Some(table) => owned(&["route", "show", "table", table]),
                None => owned(&["route", "show"]),
            };
            let object: Vec<&str> = rest
                .iter()
                .take_while(|word| **word != "table" && **word != "mtu")
                .copied()
                .collect();
            Some((list, vec![object.join(" ").replace("/32", "")]))
        }
        ["neigh", "replace", "proxy", address, "dev", device] => Some((
            owned(&["neigh", "show", "proxy"]),
            vec![format!("{address} dev {device}")],
        )),
        ["rule", "add", "pref", pref, rest @ ..] => {
            let mut fragments = vec![format!("{pref}:")];
            fragments.extend(rest.chunks(2).map(|pair| pair.join(" ").replace("/32", "")));
            Some((owned(&["rule", "show"]), fragments))
        }
        _ => None,
    }
}

/// Collapses runs of blanks, so that `ip`'s column spacing does not matter.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Steps applied, each with how to undo it, to undo at exit (or when a new plan no longer
/// has them). With a [`Journal`], how to undo them is also kept on disk, so that the next
/// `lbd` can undo what one that died (SIGKILL, a crash) left behind.
#[derive(Debug, Default)]
pub struct Applied {
    steps: Vec<(Step, Option<Undo>)>,
    journal: Option<Journal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Undo {
    Sysctl(PathBuf, String),
    Ip(Vec<String>),
}

impl Undo {
    /// One line of the journal.
    fn line(&self) -> String {
        match self {
            Self::Sysctl(path, old) => format!("sysctl {} {old}", path.display()),
            Self::Ip(args) => format!("ip {}", args.join(" ")),
        }
    }

    /// Reads a journal line back.
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        match words.next()? {
            "sysctl" => {
                let path = PathBuf::from(words.next()?);
                // Only what this module writes: a file under /proc/sys.
                path.starts_with("/proc/sys/")
                    .then(|| Self::Sysctl(path, words.collect::<Vec<_>>().join(" ")))
            }
            "ip" => Some(Self::Ip(words.map(str::to_owned).collect())),
            _ => None,
        }
    }
}

/// Where how to undo the host setup is kept while lbd runs, locked by the running lbd: one
/// file per TUN device and network namespace under `$RUNTIME_DIRECTORY` (systemd) or
/// `/run/lbd/`. A file left with lines in it
/// is what an lbd that did not exit cleanly applied.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The directory of the journals.
const JOURNALS: &str = "/run/lbd";

/// An empty journal (everything undone) is removed when lbd lets go of it.
impl Drop for Journal {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|metadata| metadata.len() == 0) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Journal {
    /// Opens and locks the journal of `tun` in this network namespace, and undoes what a
    /// previous lbd left in it. Fails if another lbd here holds it. Where no journal can be
    /// kept (a directory lbd may not write), `None`, with a warning: lbd then works as before
    /// journals, and a killed lbd's setup is not undone by the next.
    fn open(tun: &str) -> Result<Option<Self>, SetupError> {
        use std::os::unix::fs::MetadataExt;
        // systemd's RuntimeDirectory= when set, else /run/lbd.
        let directory =
            std::env::var_os("RUNTIME_DIRECTORY").map_or_else(|| PathBuf::from(JOURNALS), PathBuf::from);
        let namespace = std::fs::metadata("/proc/self/ns/net").map_or(0, |metadata| metadata.ino());
        let path = directory.join(format!("setup-{tun}-net{namespace}"));
        let opened = std::fs::create_dir_all(&directory).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
        });
        let file = match opened {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(
                    journal = %path.display(),
                    %error,
                    "cannot keep the dataplane setup journal; if this lbd is killed, the next one will not undo its setup"
                );
                return Ok(None);
            }
        };
        let failed = |reason: String| SetupError {
            step: format!("lock {}", path.display()),
            reason,
        };
        let lock =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
                failed(format!(
                    "another lbd in this network namespace uses the TUN device {tun} (it holds {})",
                    path.display()
                ))
            })?;
        let left = std::fs::read_to_string(&path).unwrap_or_default();
        let stale: Vec<Undo> = left.lines().filter_map(Undo::parse).collect();
        if !stale.is_empty() {
            tracing::warn!(
                steps = stale.len(),
                journal = %path.display(),
                "an lbd that did not exit cleanly left its host setup; undoing it first"
            );
            for undo in stale.into_iter().rev() {
                undo_step(Some(undo));
            }
        }
        let journal = Self { path, _lock: lock };
        journal.save(std::iter::empty());
        Ok(Some(journal))
    }

    /// Writes how to undo `undos`, in the order they were applied.
    fn save<'a>(&self, undos: impl Iterator<Item = &'a Undo>) {
        let text: String = undos.map(|undo| undo.line() + "\n").collect();
        if let Err(error) = std::fs::write(&self.path, text) {
            tracing::warn!(journal = %self.path.display(), %error, "cannot keep the dataplane setup journal");
        }
    }
}

/// A step could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("dataplane setup: `{step}` failed: {reason}")]
pub struct SetupError {
    /// The step.
    pub step: String,
    /// Why.
    pub reason: String,
}

/// Applies `steps` for the TUN device `tun`, remembering how to undo each, on disk too (see
/// [`Journal`]; what an lbd that died left is undone first); on a failure, undoes what was
/// applied.
pub fn apply(tun: &str, steps: &[Step]) -> Result<Applied, SetupError> {
    let mut applied = Applied {
        steps: Vec::new(),
        journal: Journal::open(tun)?,
    };
    let change = applied.change(steps)?;
    applied.commit(change);
    Ok(applied)
}

/// A move from one plan to another, made beside the old one: the new plan's steps all hold,
/// and the old plan's other steps still hold until `Change::commit` undoes them, or until
/// [`Applied::revert`] puts the host back exactly as it was.
#[derive(Debug)]
#[must_use = "commit or revert the change"]
pub struct Change {
    /// The steps this change ran (not in the old plan), to undo on revert.
    added: Vec<Step>,
    /// The old plan's steps the new one lacks, undone at commit.
    retired: Applied,
}

fn run(step: &Step) -> Result<Option<Undo>, String> {
    match step {
        Step::Sysctl { key, value } => {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            let old = std::fs::read_to_string(&path).map_err(|error| error.to_string())?;
            if old.trim() == value {
                return Ok(None);
            }
            std::fs::write(&path, value).map_err(|error| error.to_string())?;
            Ok(Some(Undo::Sysctl(path, old.trim().to_owned())))
        }
        Step::Ip { args, undo } => {
            let output = Command::new("ip")
                .args(args)
                .output()
                .map_err(|error| format!("cannot run ip (install iproute2): {error}"))?;
            if !output.status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
            }
            Ok(Some(Undo::Ip(undo.clone())))
        }
    }
}

impl Applied {
    /// Moves to `plan` beside what is applied: steps already applied are kept, the others run
    /// in order. If one fails, those that ran are undone and nothing changed.
    pub fn change(&mut self, plan: &[Step]) -> Result<Change, SetupError> {
        let mut old = std::mem::take(&mut self.steps);
        let mut added = Vec::new();
        for step in plan {
            if let Some(position) = old.iter().position(|(applied, _)| applied == step) {
                self.steps.push(old.remove(position));
                continue;
            }
            match run(step) {
                Ok(undo) => {
                    self.steps.push((step.clone(), undo));
                    added.push(step.clone());
                }
                Err(reason) => {
                    self.revert(Change {
                        added,
                        retired: Self {
                            steps: old,
                            journal: None,
                        },
                    });
                    return Err(SetupError {
                        step: step.to_string(),
                        reason,
                    });
                }
            }
            // Until the change is committed or reverted, both plans' steps hold.
            self.save_with(&old);
        }
        Ok(Change {
            added,
            retired: Self {
                steps: old,
                journal: None,
            },
        })
    }

    /// Completes a change: the old plan's steps the new plan lacks are undone.
    pub fn commit(&mut self, change: Change) {
        drop(change.retired);
        self.save_with(&[]);
    }

    /// Keeps the journal in step: how to undo every step held, and `also`'s.
    fn save_with(&self, also: &[(Step, Option<Undo>)]) {
        if let Some(journal) = &self.journal {
            journal.save(
                self.steps
                    .iter()
                    .chain(also)
                    .filter_map(|(_, undo)| undo.as_ref()),
            );
        }
    }

    /// Undoes a change not committed: the steps it ran are undone (last first) and the old
    /// plan's steps are held again.
    pub fn revert(&mut self, change: Change) {
        let Change { added, mut retired } = change;
        let mut kept = Vec::new();
        while let Some((step, undo)) = self.steps.pop() {
            if added.contains(&step) {
                undo_step(undo);
            } else {
                kept.push((step, undo));
            }
        }
        kept.reverse();
        self.steps = kept;
        self.steps.append(&mut retired.steps);
        self.save_with(&[]);
    }

    /// Undoes every step, last first.
    pub fn undo_all(&mut self) {
        while let Some((_, undo)) = self.steps.pop() {
            undo_step(undo);
            self.save_with(&[]);
        }
    }
}

fn undo_step(undo: Option<Undo>) {
    match undo {
        Some(Undo::Sysctl(path, old)) => {
            let _ = std::fs::write(path, old);
        }
        Some(Undo::Ip(args)) => match Command::new("ip").args(&args).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => tracing::warn!(
                "undoing the dataplane setup: `ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => tracing::warn!("undoing the dataplane setup: cannot run ip: {error}"),
        },
        None => {}
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        self.undo_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn journal_lines_read_back() {
        for undo in [
            Undo::Sysctl(PathBuf::from("/proc/sys/net/ipv4/ip_forward"), "0".to_owned()),
            Undo::Ip(vec!["rule".into(), "del".into(), "pref".into(), "1000".into()]),
        ] {
            assert_eq!(Undo::parse(&undo.line()), Some(undo));
        }
        assert_eq!(Undo::parse("sysctl /etc/passwd x"), None, "only /proc/sys");
        assert_eq!(Undo::parse("rm -rf /"), None);
    }

    #[test]
    fn a_tunnelled_vip_route_is_narrower_by_the_outer_header() {
        let config = config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', forward: tun, reals: [{address: '10.77.0.11:80'}] }\n  - { protocol: tcp, listen: '192.168.77.101:80', forward: dr, reals: [{address: '10.77.0.11:80'}] }\n",
            "t",
        )
        .unwrap();
        let steps: Vec<String> = plan(&config, &[], true).iter().map(ToString::to_string).collect();
        assert!(
            steps.contains(&"ip route replace 192.168.77.100/32 dev lbtun0 mtu 1480".to_owned()),
            "{steps:?}"
        );
        assert!(
            steps.contains(&"ip route replace 192.168.77.101/32 dev lbtun0".to_owned()),
            "{steps:?}"
        );
        // `setup: manual` finds such a route by its destination and device.
        let route = plan(&config, &[], true)
            .into_iter()
            .find(|step| step.to_string().contains("mtu"))
            .unwrap();
        let (list, fragments) = listing_of(&route.args_of()).unwrap();
        assert_eq!(list, ["route", "show"]);
        assert_eq!(fragments, ["192.168.77.100 dev lbtun0"]);
    }

    #[test]
    fn a_nat_service_needs_routes_rules_and_sysctls() {
        let config = config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', forward: nat, reals: [{address: '10.77.0.11:8080'}] }\n",
            "t",
        )
        .unwrap();
        let steps: Vec<String> = plan(&config, &["dcl0".to_owned()], true)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "sysctl -w net.ipv4.ip_forward=1",
                "sysctl -w net.ipv4.conf.all.rp_filter=0",
                "sysctl -w net.ipv4.conf.lbtun0.rp_filter=0",
                "sysctl -w net.ipv4.conf.br0.rp_filter=2",
                "ip route replace 192.168.77.100/32 dev lbtun0",
                "ip neigh replace proxy 192.168.77.100 dev dcl0",
                "sysctl -w net.ipv4.neigh.dcl0.proxy_delay=0",
                "ip route replace default dev lbtun0 table 100",
                "ip rule add pref 1000 iif br0 from 10.77.0.11/32 ipproto tcp sport 8080 lookup 100",
            ]
        );
    }
}
