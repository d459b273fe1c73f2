//! IPVS's connection states: a flow's [`State`] (a TCP state, or UDP's one), and the TCP state
//! machine (`ip_vs_proto_tcp.c`): which state a flow enters on each packet, by direction and by
//! the packet's most important flag (RST > SYN > FIN > ACK), and how long each state lives
//! without traffic.

use std::time::Duration;

use crate::{config::Timeouts, packet::TcpFlags};

/// A TCP flow's state, named as `ipvsadm -L -c` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// No packet seen yet.
    None,
    /// Established.
    Established,
    /// The server sent SYN (NAT output).
    SynSent,
    /// The client sent SYN.
    SynRecv,
    /// One side closed.
    FinWait,
    /// Both sides closed.
    TimeWait,
    /// Reset or closed.
    Close,
    /// The client closed first (NAT).
    CloseWait,
    /// Last ACK awaited.
    LastAck,
    /// Listen (not reached by flows through the director).
    Listen,
    /// SYN-ACK seen.
    SynAck,
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI, None as NO,
    SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// Which way a packet goes, as IPVS's three tables tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → real, when the director also sees the replies (NAT).
    Input,
    /// Real → client (NAT replies).
    Output,
    /// Client → real, when replies bypass the director (DR, TUN).
    InputOnly,
}

/// Rows: SYN, FIN, ACK, RST; columns: the current state in the order of [`TcpState`]
/// (NONE, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA).
type Table = [[TcpState; 11]; 4];

const INPUT: Table = [
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
];

const OUTPUT: Table = [
    [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
    [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
    [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
];

const INPUT_ONLY: Table = [
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
];

/// Half-open entries (a SYN without an answer) live this long at most, whatever IPVS's
/// per-state timeout, so that a flood of spoofed SYNs cannot fill the table for a minute.
pub const EMBRYONIC_TIMEOUT: Duration = Duration::from_secs(10);

impl TcpState {
    /// Every state, in IPVS's numbering (`IP_VS_TCP_S_*`: NONE = 0 … SYNACK = 10).
    pub const ALL: [Self; 11] = [NO, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA];

    fn column(self) -> usize {
        self as usize
    }

    /// IPVS's number of the state, as the sync protocol carries it.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// The state IPVS numbers `number`.
    pub fn from_number(number: u16) -> Option<Self> {
        Self::ALL.get(usize::from(number)).copied()
    }

    /// The state after a packet with `flags` going `direction`; a packet with none of the four
    /// flags leaves the state as it is.
    pub fn next(self, direction: Direction, flags: TcpFlags) -> Self {
        let row = if flags.rst {
            3
        } else if flags.syn {
            0
        } else if flags.fin {
            1
        } else if flags.ack {
            2
        } else {
            return self;
        };
        let table = match direction {
            Direction::Input => &INPUT,
            Direction::Output => &OUTPUT,
            Direction::InputOnly => &INPUT_ONLY,
        };
        table[row][self.column()]
    }

    /// Whether the flow counts as ActiveConn (IPVS: only ESTABLISHED).
    pub fn is_active(self) -> bool {
        self == ES
    }

    /// Whether the flow is half-open: evicted first when the table is full.
    pub fn is_embryonic(self) -> bool {
        matches!(self, NO | SR | SS | SA)
    }

    /// How long the state lives without traffic: IPVS's table, with `ipvsadm --set`'s three
    /// (ESTABLISHED, FIN_WAIT) from the config, and half-open states capped.
    pub fn timeout(self, timeouts: &Timeouts) -> Duration {
        let seconds = |s| Duration::from_secs(s);
        match self {
            NO => seconds(2),
            ES => timeouts.tcp,
            SS | SA => seconds(120).min(EMBRYONIC_TIMEOUT),
            SR => seconds(60).min(EMBRYONIC_TIMEOUT),
            FW => timeouts.tcp_fin,
            TW => seconds(120),
            CL => seconds(10),
            CW => seconds(60),
            LA => seconds(30),
            LI => seconds(120),
        }
    }

    /// The ipvsadm name.
    pub fn name(self) -> &'static str {
        match self {
            NO => "NONE",
            ES => "ESTABLISHED",
            SS => "SYN_SENT",
            SR => "SYN_RECV",
            FW => "FIN_WAIT",
            TW => "TIME_WAIT",
            CL => "CLOSE",
            CW => "CLOSE_WAIT",
            LA => "LAST_ACK",
            LI => "LISTEN",
            SA => "SYNACK",
        }
    }
}

/// A flow's state: IPVS's TCP states, or UDP's single one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP.
    Tcp(TcpState),
    /// UDP.
    Udp,
}

impl State {
    /// The ipvsadm name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp(state) => state.name(),
            Self::Udp => "UDP",
        }
    }

    pub(crate) fn timeout_ms(self, timeouts: &Timeouts) -> u64 {
        let timeout = match self {
            Self::Tcp(state) => state.timeout(timeouts),
            Self::Udp => timeouts.udp,
        };
        u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn is_embryonic(self) -> bool {
        matches!(self, Self::Tcp(state) if state.is_embryonic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> TcpFlags {
        TcpFlags {
            syn: text.contains('S'),
            ack: text.contains('A'),
            fin: text.contains('F'),
            rst: text.contains('R'),
        }
    }

    #[test]
    fn a_nat_connection_walks_ipvs_states() {
        let mut state = NO;
        let steps = [
            (Direction::Input, "S", SR),
            (Direction::Output, "SA", SR),
            (Direction::Input, "A", ES),
            (Direction::Input, "FA", CW),
            (Direction::Output, "FA", TW),
        ];
        for (direction, packet, expected) in steps {
            state = state.next(direction, flags(packet));
            assert_eq!(state, expected, "{direction:?} {packet}");
        }
    }

    #[test]
    fn direct_routing_sees_only_input() {
        let mut state = NO;
        // The server's FIN is never seen: the flow waits in FIN_WAIT for its timeout.
        for (packet, expected) in [("S", SR), ("A", ES), ("FA", FW), ("A", FW)] {
            state = state.next(Direction::InputOnly, flags(packet));
            assert_eq!(state, expected, "{packet}");
        }
        assert_eq!(ES.next(Direction::InputOnly, flags("R")), CL);
    }

    #[test]
    fn timeouts_follow_the_config_and_cap_half_open_states() {
        let timeouts = Timeouts {
            tcp: Duration::from_secs(100),
            tcp_fin: Duration::from_secs(20),
            ..Timeouts::default()
        };
        assert_eq!(ES.timeout(&timeouts), Duration::from_secs(100));
        assert_eq!(FW.timeout(&timeouts), Duration::from_secs(20));
        assert_eq!(SR.timeout(&timeouts), EMBRYONIC_TIMEOUT);
        assert_eq!(CL.timeout(&timeouts), Duration::from_secs(10));
        assert!(SR.is_embryonic() && !ES.is_embryonic() && ES.is_active());
    }
}
