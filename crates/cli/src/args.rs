//! The command line, as clap reads it. Ids, scopes and times are parsed
//! here by their own `FromStr`, so a malformed one is refused before the
//! data directory is opened.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use tokenledger_authz::Head;
use tokenledger_events::{
    Actor, CompanyId, Feature, Scope, TeammateId, Timestamp, TokenId, WorkspaceId,
};

/// tokenledger: audit-grade authorization of API tokens.
#[derive(Debug, Parser)]
#[command(name = "tokenledger", version, about, max_term_width = 100)]
pub struct Cli {
    /// The data directory, or a PostgreSQL database as
    /// postgres://USER@HOST:PORT/DATABASE (its schema made on first use)
    /// [default: $TOKENLEDGER_DATA, else ./tokenledger-data]. Give a
    /// password through $PGPASSWORD, not in the URL, which
    /// other users can see in the process list.
    #[arg(long, global = true, value_name = "DIR|URL")]
    pub data: Option<PathBuf>,
    /// A file holding the 32-byte key that seals secrets so that admins can
    /// reveal them (raw, or 64 hex digits). Keep it outside the data directory.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_SEALING_KEY_FILE"
    )]
    pub sealing_key_file: Option<PathBuf>,
    /// A sealing key rotated out (repeat for several): it reveals the
    /// secrets it sealed, and seals nothing new.
    #[arg(long = "old-sealing-key-file", global = true, value_name = "FILE")]
    pub old_sealing_key_files: Vec<PathBuf>,
    /// A file holding the 32-byte key that signs checkpoints of the state,
    /// so a forged one is refused (raw, or 64 hex digits). Keep it outside
    /// the data directory. Without it, no checkpoint is written or loaded.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_CHECKPOINT_KEY_FILE"
    )]
    pub checkpoint_key_file: Option<PathBuf>,
    /// A head recorded earlier, as `verify` prints it: a log that does not
    /// contain it (truncated, rolled back or replaced) is refused. Keep it
    /// outside the data directory.
    #[arg(
        long,
        global = true,
        value_name = "POSITION:HASH",
        env = "TOKENLEDGER_KNOWN_HEAD"
    )]
    pub known_head: Option<Head>,
    /// Print one JSON document on standard output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Top,
}

#[derive(Debug, Subcommand)]
pub enum Top {
    /// Companies (tenants).
    #[command(subcommand)]
    Company(CompanyCommand),
    /// Teammates: add, change role, deactivate.
    #[command(subcommand)]
    Teammate(TeammateCommand),
    /// Shared workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// API tokens: create, list, show, reveal, delete.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Teammates' "Allow access to my individual resources via the API".
    #[command(subcommand)]
    Pref(PrefCommand),
    /// May the token whose secret is on standard input do this? Exit 0
    /// allowed, 1 refused, 2 bad input.
    Check(CheckArgs),
    /// The audit trail: events, oldest first.
    History(HistoryArgs),
    /// What a token could reach over a period.
    Timeline(TimelineArgs),
    /// The tokens that could use a scope on a namespace at a time.
    WhoCan(WhoCanArgs),
    /// Walk the log and check its hash chain. Exit 1 with the first broken position.
    Verify,
    /// Verify the whole log, then sign its head with the checkpoint key:
    /// once, for a log written without a key, which is refused with one
    /// until then.
    SignHead,
    /// Write every event to a JSON lines file, with positions and hashes.
    Export {
        /// The file to write; it must not exist.
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
    },
    /// Read an export into a new data directory, checking the chain and
    /// replaying the rules first; the directory appears only once whole.
    Import {
        /// The export to read.
        #[arg(value_name = "FILE.jsonl")]
        file: PathBuf,
        /// Refuse the file unless its last record is this head: the position
        /// and hash `verify` reported where the export was made.
        #[arg(long, value_name = "POSITION:HASH")]
        expect_head: Option<tokenledger_authz::Head>,
    },
    /// Rewrite the log's storage files with only what they hold, and print
    /// their sizes. The data directory must not be in use.
    Compact,
    /// Run the forum story on a fresh data directory, and show what to try next.
    Demo,
    /// Serve the ledger over HTTP: checks, the AuthZEN API, commands and
    /// investigations, until SIGTERM (then finish what is in flight, close
    /// the ledger, exit 0).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen, such as 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// A file holding the check key (one key, 16 to 1024 visible ASCII
    /// characters): it may ask questions only.
    #[arg(long, value_name = "FILE")]
    pub check_key_file: PathBuf,
    /// A file holding the admin key: it may also run commands and
    /// investigations.
    #[arg(long, value_name = "FILE")]
    pub admin_key_file: PathBuf,
    /// A PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CompanyCommand {
    /// Create a company.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TeammateCommand {
    /// Add a teammate to a company.
    Add {
        #[arg(long, value_name = "CMP")]
        company: CompanyId,
        #[arg(long)]
        name: String,
        /// Make them an admin (else a member).
        #[arg(long)]
        admin: bool,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
    /// Change a teammate's role.
    #[command(group(ArgGroup::new("role").required(true).args(["admin", "member"])))]
    Role {
        #[arg(value_name = "TEA")]
        teammate: TeammateId,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        member: bool,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
    /// Deactivate a teammate, for good.
    Deactivate {
        #[arg(value_name = "TEA")]
        teammate: TeammateId,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a shared workspace.
    Create {
        #[arg(long, value_name = "CMP")]
        company: CompanyId,
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once (and can be revealed
    /// later only with a sealing key).
    Create(TokenCreateArgs),
    /// A company's tokens.
    List {
        #[arg(long, value_name = "CMP")]
        company: CompanyId,
    },
    /// One token: its scope, who created and revealed it, its deletion.
    Show {
        #[arg(value_name = "TOK")]
        token: TokenId,
    },
    /// Show a token's secret again (recorded first; needs the sealing key).
    Reveal {
        #[arg(value_name = "TOK")]
        token: TokenId,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
    /// Delete a token: at once, for good.
    Delete {
        #[arg(value_name = "TOK")]
        token: TokenId,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[arg(long, value_name = "CMP")]
    pub company: CompanyId,
    #[arg(long)]
    pub name: String,
    #[arg(long, value_name = "ACTOR")]
    pub by: Actor,
    /// An OAuth grant rather than an API token.
    #[arg(long)]
    pub oauth: bool,
    /// A feature: resources, provisioning, app-triggers.
    #[arg(long = "feature", value_name = "FEATURE")]
    pub features: Vec<Feature>,
    /// Company-level resources.
    #[arg(long)]
    pub global: bool,
    /// Shared workspaces: `all`, or a workspace id (repeat for several).
    #[arg(long = "shared", value_name = "all|TIM")]
    pub shared: Vec<String>,
    /// Teammates' private resources (each owner must allow it too).
    #[arg(long)]
    pub private: bool,
    /// A scope such as conversations:read (repeat for several).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<Scope>,
    /// When it stops working (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub expires: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn allowed(self) -> bool {
        self == OnOff::On
    }
}

#[derive(Debug, Subcommand)]
pub enum PrefCommand {
    /// Set one teammate's private API access.
    Set {
        #[arg(value_name = "TEA")]
        teammate: TeammateId,
        #[arg(long, value_name = "on|off")]
        private_api_access: OnOff,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
    /// Set every teammate's private API access in a company.
    SetAll {
        #[arg(long, value_name = "CMP")]
        company: CompanyId,
        #[arg(long, value_name = "on|off")]
        private_api_access: OnOff,
        #[arg(long, value_name = "ACTOR")]
        by: Actor,
    },
}

/// Where a resource lives, as the namespace flags say.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("namespace").required(true).args(["global", "shared", "private"])))]
pub struct NamespaceArgs {
    /// Company-level (with --company).
    #[arg(long, requires = "company")]
    pub global: bool,
    /// The company, with --global.
    #[arg(long, value_name = "CMP")]
    pub company: Option<CompanyId>,
    /// A shared workspace.
    #[arg(long, value_name = "TIM")]
    pub shared: Option<WorkspaceId>,
    /// A teammate's private resources.
    #[arg(long, value_name = "TEA")]
    pub private: Option<TeammateId>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["scope", "endpoint"])))]
pub struct CheckArgs {
    /// The scope the request needs.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<Scope>,
    /// The request, as "METHOD PATH"; the scope comes from Front's catalog.
    #[arg(long, value_name = "METHOD PATH")]
    pub endpoint: Option<String>,
    /// The resource's id, such as cnv_123.
    #[arg(long, value_name = "ID")]
    pub resource: String,
    #[command(flatten)]
    pub namespace: NamespaceArgs,
    /// Decide as of this time, against the state then.
    #[arg(long, value_name = "RFC3339", conflicts_with = "position")]
    pub at: Option<Timestamp>,
    /// Decide against the state at this log position.
    #[arg(long, value_name = "N")]
    pub position: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, value_name = "TOK")]
    pub token: Option<TokenId>,
    #[arg(long, value_name = "ACTOR")]
    pub actor: Option<Actor>,
    #[arg(long, value_name = "TEA")]
    pub teammate: Option<TeammateId>,
    #[arg(long, value_name = "CMP")]
    pub company: Option<CompanyId>,
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<Timestamp>,
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<Timestamp>,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    #[arg(value_name = "TOK")]
    pub token: TokenId,
    /// The period's start [default: the token's creation].
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<Timestamp>,
    /// The period's end [default: now].
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<Timestamp>,
    /// Also write the timeline as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WhoCanArgs {
    #[arg(long, value_name = "SCOPE")]
    pub scope: Scope,
    #[command(flatten)]
    pub namespace: NamespaceArgs,
    /// The time asked about [default: now].
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<Timestamp>,
}
