//! What the host needs for the packet data plane: IP forwarding, the VIP
//! routes into the TUN device, proxy ARP for the VIPs, the policy rules that steer NAT replies
//! back into the TUN, and relaxed reverse-path filtering. With `setup: auto` lbd applies them
//! and undoes them at exit; with `manual` it checks them and prints what is missing; `lbd
//! --check` prints the plan.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
};

use crate::config::{CHECK_MARK, CHECK_TABLE, Config, ForwardMethod, Protocol};

pub use crate::config::REPLY_TABLE;
/// Preference of the first reply-steering rule.
const RULE_PREF: u32 = 1000;

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

/// What the plan needs to know of this host's links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// Interfaces that face the clients (proxy ARP and proxy NDP for the VIPs go there).
    pub clients: Vec<String>,
    /// The MTU of the server-side interface, when there is one.
    pub server_mtu: Option<u32>,
}

/// The MTU a VIP's route gets when nothing narrower is known: an Ethernet MTU (and the TUN
/// device's own).
const ETHERNET_MTU: u32 = 1500;
/// IPv6's minimum link MTU (RFC 8200): a route is never narrower.
const IPV6_MIN_MTU: u32 = 1280;

/// `-6 ` for IPv6 (an `ip` command's family), nothing for IPv4.
fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv6() { "-6 " } else { "" }
}

/// The steps a config needs, in order. The VIPs' routes into the TUN device and their proxy-ARP
/// (proxy-NDP) entries are the `master`'s only: a backup of an `ha:` pair leaves them out, so
/// that only the master draws the VIPs' traffic.
///
/// A VIP's route is as narrow as the way to its reals: the server side's MTU, less the outer
/// header for tunnelled reals (20 bytes for IPv4, 40 for IPv6). The kernel then answers
/// oversize packets to the VIP itself, before lbd, with "fragmentation needed" (IPv4) or
/// "packet too big" (IPv6), quoting the packet the client sent, so the client's path MTU
/// discovery works, as IPVS's own MTU check does. IPv6 forwarding only honours a route's MTU
/// when it is locked (`mtu lock`).
pub fn plan(config: &Config, links: &Links, master: bool) -> Vec<Step> {
    let Some(dataplane) = &config.dataplane else {
        return Vec::new();
    };
    let tun = &dataplane.tun;
    let server = dataplane.server_interface.clone().unwrap_or_default();
    // Each VIP with its route's MTU.
    let mut vips: BTreeMap<IpAddr, u32> = BTreeMap::new();
    let mut nat_reals: BTreeSet<(Protocol, SocketAddr)> = BTreeSet::new();
    let base = links.server_mtu.unwrap_or(ETHERNET_MTU).min(ETHERNET_MTU);
    for service in config.services.iter().filter(|service| service.on_packet_plane()) {
        for real in &service.reals {
            let overhead = match real.forward_in(service) {
                ForwardMethod::Proxy => continue,
                ForwardMethod::Nat => {
                    nat_reals.insert((service.protocol, real.address));
                    0
                }
                ForwardMethod::Dr => 0,
                ForwardMethod::Tun if real.address.is_ipv4() => 20,
                ForwardMethod::Tun => 40,
            };
            let mtu = vips.entry(service.listen.ip()).or_insert(ETHERNET_MTU);
            *mtu = (*mtu).min(base - overhead);
        }
    }
    if vips.is_empty() {
        return Vec::new();
    }
    let (ipv4, ipv6) = (
        vips.keys().any(IpAddr::is_ipv4) || nat_reals.iter().any(|(_, real)| real.is_ipv4()),
        vips.keys().any(IpAddr::is_ipv6) || nat_reals.iter().any(|(_, real)| real.is_ipv6()),
    );
    let mut steps = Vec::new();
    if ipv4 {
        steps.push(sysctl("net.ipv4.ip_forward", "1"));
        steps.push(sysctl("net.ipv4.conf.all.rp_filter", "0"));
        steps.push(sysctl(&format!("net.ipv4.conf.{tun}.rp_filter"), "0"));
        if !server.is_empty() {
            // Replies from the VIP (DR, TUN) come back through the server side: loose at most.
            steps.push(sysctl(&format!("net.ipv4.conf.{server}.rp_filter"), "2"));
        }
    }
    if ipv6 {
        // IPv6 has no reverse-path filter of its own; it needs forwarding, and IPv6 on the
        // TUN device (which some hosts turn off there).
        steps.push(sysctl("net.ipv6.conf.all.forwarding", "1"));
        steps.push(sysctl(&format!("net.ipv6.conf.{tun}.disable_ipv6"), "0"));
    }
    for (address, mtu) in vips.iter().filter(|_| master) {
        let vip = host(address);
        let mtu = match address {
            IpAddr::V4(_) if *mtu < ETHERNET_MTU => format!(" mtu {mtu}"),
            IpAddr::V6(_) if *mtu < ETHERNET_MTU => format!(" mtu lock {}", (*mtu).max(IPV6_MIN_MTU)),
            _ => String::new(),
        };
        let family = family(address);
        steps.push(ip(
            &format!("{family}route replace {vip} dev {tun}{mtu}"),
            &format!("{family}route del {vip} dev {tun}"),
        ));
        for interface in &links.clients {
            steps.push(ip(
                &format!("{family}neigh replace proxy {} dev {interface}", strip(&vip)),
                &format!("{family}neigh del proxy {} dev {interface}", strip(&vip)),
            ));
        }
    }
    for interface in &links.clients {
        if ipv4 {
            steps.push(sysctl(&format!("net.ipv4.neigh.{interface}.proxy_delay"), "0"));
        }
        if ipv6 {
            // Proxy NDP entries are answered only where proxy_ndp is on.
            steps.push(sysctl(&format!("net.ipv6.conf.{interface}.proxy_ndp"), "1"));
            steps.push(sysctl(&format!("net.ipv6.neigh.{interface}.proxy_delay"), "0"));
        }
    }
    // Health checks through the VIP's path (`via_vip`): their marked packets go into the TUN
    // device, on a backup too, where lbd forwards them to the real checked.
    let checked_vips: BTreeSet<IpAddr> = config
        .services
        .iter()
        .filter(|service| service.on_packet_plane())
        .filter(|service| service.health_check.as_ref().is_some_and(|check| check.via_vip))
        .map(|service| service.listen.ip())
        .collect();
    for vip in &checked_vips {
        let family = family(vip);
        let vip = host(vip);
        steps.push(ip(
            &format!("{family}route replace {vip} dev {tun} table {CHECK_TABLE}"),
            &format!("{family}route del {vip} dev {tun} table {CHECK_TABLE}"),
        ));
    }
    for (family, present) in [
        ("", checked_vips.iter().any(IpAddr::is_ipv4)),
        ("-6 ", checked_vips.iter().any(IpAddr::is_ipv6)),
    ] {
        if present {
            let rule = format!(
                "pref {} fwmark {CHECK_MARK:#x} lookup {CHECK_TABLE}",
                RULE_PREF - 2
            );
            steps.push(ip(
                &format!("{family}rule add {rule}"),
                &format!("{family}rule del {rule}"),
            ));
        }
    }
    if !nat_reals.is_empty() {
        let iif = if server.is_empty() {
            String::new()
        } else {
            format!("iif {server} ")
        };
        for (family, icmp, present) in [
            ("", "icmp", nat_reals.iter().any(|(_, real)| real.is_ipv4())),
            (
                "-6 ",
                "ipv6-icmp",
                nat_reals.iter().any(|(_, real)| real.is_ipv6()),
            ),
        ] {
            if !present {
                continue;
            }
            steps.push(ip(
                &format!("{family}route replace default dev {tun} table {REPLY_TABLE}"),
                &format!("{family}route del default dev {tun} table {REPLY_TABLE}"),
            ));
            if !server.is_empty() {
                // ICMP errors about nat flows (Packet Too Big, unreachables) from the server
                // side are translated too. Without a server-side interface no rule can tell
                // them from the packets lbd sends back into the TUN device.
                let rule = format!("pref {} {iif}ipproto {icmp} lookup {REPLY_TABLE}", RULE_PREF - 1);
                steps.push(ip(
                    &format!("{family}rule add {rule}"),
                    &format!("{family}rule del {rule}"),
                ));
            }
        }
        for (i, (protocol, real)) in nat_reals.iter().enumerate() {
            let rule = format!(
                "pref {} {iif}from {} ipproto {protocol} sport {} lookup {REPLY_TABLE}",
                RULE_PREF + i as u32,
                host(&real.ip()),
                real.port()
            );
            let family = family(&real.ip());
            steps.push(ip(
                &format!("{family}rule add {rule}"),
                &format!("{family}rule del {rule}"),
            ));
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

/// This host's links as the plan needs them: the client-facing interfaces and the server
/// side's MTU.
pub fn links(tun: &str, server: Option<&str>) -> Links {
    let server_mtu = server.and_then(|server| {
        let text = std::fs::read_to_string(format!("/sys/class/net/{server}/mtu")).ok()?;
        text.trim().parse().ok()
    });
    Links {
        clients: client_interfaces(tun, server),
        server_mtu,
    }
}

/// Interfaces that face the clients: every interface but loopback, the TUN device and the
/// server-side interface (proxy ARP for the VIPs goes there).
fn client_interfaces(tun: &str, server: Option<&str>) -> Vec<String> {
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
    let mut words: Vec<&str> = args.iter().map(String::as_str).collect();
    // `ip -6 …` lists with `ip -6 … show`.
    let family = (words.first() == Some(&"-6")).then(|| words.remove(0));
    let owned = |list: &[&str]| {
        family
            .iter()
            .chain(list)
            .map(|word| (*word).to_owned())
            .collect::<Vec<_>>()
    };
    // `ip` lists a host route's or rule's address without its /32 or /128.
    let bare = |text: String| text.replace("/32", "").replace("/128", "");
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
            Some((list, vec![bare(object.join(" "))]))
        }
        ["neigh", "replace", "proxy", address, "dev", device] => Some((
            owned(&["neigh", "show", "proxy"]),
            vec![format!("{address} dev {device}")],
        )),
        ["rule", "add", "pref", pref, rest @ ..] => {
            let mut fragments = vec![format!("{pref}:")];
            fragments.extend(rest.chunks(2).map(|pair| bare(pair.join(" "))));
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

    /// The plan of a master on `links`, as `--check` prints it.
    fn commands(config: &Config, links: &Links) -> Vec<String> {
        plan(config, links, true)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

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
        let steps = commands(&config, &Links::default());
        assert!(
            steps.contains(&"ip route replace 192.168.77.100/32 dev lbtun0 mtu 1480".to_owned()),
            "{steps:?}"
        );
        assert!(
            steps.contains(&"ip route replace 192.168.77.101/32 dev lbtun0".to_owned()),
            "{steps:?}"
        );
        // `setup: manual` finds such a route by its destination and device.
        let route = plan(&config, &Links::default(), true)
            .into_iter()
            .find(|step| step.to_string().contains("mtu"))
            .unwrap();
        let (list, fragments) = listing_of(&route.args_of()).unwrap();
        assert_eq!(list, ["route", "show"]);
        assert_eq!(fragments, ["192.168.77.100 dev lbtun0"]);
    }

    #[test]
    fn checks_through_the_vip_route_their_marked_packets_into_the_tun_device() {
        let config = config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', forward: dr, health_check: { type: tcp, via_vip: true }, reals: [{address: '10.77.0.11'}] }\n",
            "t",
        )
        .unwrap();
        let links = Links {
            clients: vec!["dcl0".to_owned()],
            server_mtu: Some(1500),
        };
        let steps = commands(&config, &links);
        for step in [
            "ip route replace 192.168.77.100/32 dev lbtun0 table 101",
            "ip rule add pref 998 fwmark 0x4c420001 lookup 101",
        ] {
            assert!(steps.iter().any(|s| s == step), "{step} in {steps:#?}");
        }
        // Without via_vip, neither.
        let plain = config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', forward: dr, health_check: { type: tcp }, reals: [{address: '10.77.0.11'}] }\n",
            "t",
        )
        .unwrap();
        assert!(
            !commands(&plain, &links)
                .iter()
                .any(|step| step.contains("table 101"))
        );
    }

    #[test]
    fn a_nat_service_needs_routes_rules_and_sysctls() {
        let config = config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', forward: nat, reals: [{address: '10.77.0.11:8080'}] }\n",
            "t",
        )
        .unwrap();
        let links = Links {
            clients: vec!["dcl0".to_owned()],
            server_mtu: Some(1500),
        };
        let steps = commands(&config, &links);
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
                "ip rule add pref 999 iif br0 ipproto icmp lookup 100",
                "ip rule add pref 1000 iif br0 from 10.77.0.11/32 ipproto tcp sport 8080 lookup 100",
            ]
        );
    }

    #[test]
    fn an_ipv6_service_needs_ipv6_forwarding_proxy_ndp_and_narrower_routes_where_links_are() {
        let config = config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { protocol: tcp, listen: '[fd00:77::100]:80', forward: nat, reals: [{address: '[fd00:10::11]:8080'}] }\n  - { protocol: udp, listen: '[fd00:77::101]:53', forward: tun, reals: [{address: '10.77.0.11:53'}, {address: '[fd00:10::12]:53'}] }\n",
            "t",
        )
        .unwrap();
        let links = Links {
            clients: vec!["dcl0".to_owned()],
            server_mtu: Some(1400),
        };
        let steps = commands(&config, &links);
        assert_eq!(
            steps,
            [
                // The tun service's IPv4 real needs no IPv4 forwarding: lbd sends to it.
                "sysctl -w net.ipv6.conf.all.forwarding=1",
                "sysctl -w net.ipv6.conf.lbtun0.disable_ipv6=0",
                // The server side's MTU, and for the tunnelled VIP less the wider outer header.
                "ip -6 route replace fd00:77::100/128 dev lbtun0 mtu lock 1400",
                "ip -6 neigh replace proxy fd00:77::100 dev dcl0",
                "ip -6 route replace fd00:77::101/128 dev lbtun0 mtu lock 1360",
                "ip -6 neigh replace proxy fd00:77::101 dev dcl0",
                "sysctl -w net.ipv6.conf.dcl0.proxy_ndp=1",
                "sysctl -w net.ipv6.neigh.dcl0.proxy_delay=0",
                "ip -6 route replace default dev lbtun0 table 100",
                "ip -6 rule add pref 999 iif br0 ipproto ipv6-icmp lookup 100",
                "ip -6 rule add pref 1000 iif br0 from fd00:10::11/128 ipproto tcp sport 8080 lookup 100",
            ]
        );
        // `setup: manual` lists IPv6 objects with `ip -6`.
        let rule = plan(&config, &links, true).pop().unwrap();
        let (list, fragments) = listing_of(&rule.args_of()).unwrap();
        assert_eq!(list, ["-6", "rule", "show"]);
        assert!(
            fragments.contains(&"from fd00:10::11".to_owned()),
            "{fragments:?}"
        );
    }
}
