//! The command line of the `idle` scenario ([`IdleArgs`]), in a file of its own so that the
//! scenario (`idle`) and one process's share of it (`idle::conn`) both read it while only
//! the scenario imports the share.

/// Arguments of `fleetcast-loadtest idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// A gateway node, e.g. ws://127.0.0.1:3000 (repeat for several; connections are spread
    /// round-robin). A path such as ws://host/api/socket/ replaces /socket.io/.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Number of connections to open (over all workers).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// New connections per second (over all workers). The contract's default per-address
    /// limit is 100/s with a burst of 1000; go faster only against a server configured for it.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Seconds to hold all connections open after they are up.
    #[arg(long, default_value_t = 30)]
    pub hold: u64,
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Tenant claim for every token (absent = the server's `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Server process to read VmRSS from (/proc/PID/status) before and after connecting.
    /// Repeat it for every node behind the targets: the figure per socket is the summed
    /// growth of all given processes divided by all open sockets.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Seconds to wait after the last connection before reading the server's RSS.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Seconds one connection attempt (websocket + Socket.IO handshake) may take.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Worker processes sharing the connections (one process may hold ~18,000 sockets).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
