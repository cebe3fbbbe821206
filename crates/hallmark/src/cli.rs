//! The command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::commands::{
    agent_status, agents, authority, bundle, console, entry, federation, flows, group, inventory,
    policy, status, svid, token,
};
use crate::connect::AdminArgs;
use crate::helper;
use crate::roles::{agent, server, up};

#[derive(Parser, Debug)]
#[command(
    name = "hallmark",
    version,
    about = "Workload identity: SPIFFE SVIDs for every workload, tied to what it is, not where it runs."
)]
pub struct Cli {
    /// Log filter (e.g. info, debug, hallmark_agent=debug). HALLMARK_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (CA + registry).
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Run the node agent, or manage attested agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Run a server and an agent in one process, for a laptop.
    Up(up::UpArgs),
    /// Manage registration entries.
    Entry {
        #[command(subcommand)]
        command: EntryCommand,
    },
    /// Manage join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Show the trust bundle.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Show and rotate the server's signing authorities (X.509 CA, JWT
    /// and OIDC keys).
    Authority {
        #[command(subcommand)]
        command: authority::AuthorityCommand,
    },
    /// Federate with other trust domains: fetch their bundles and give them
    /// to the workloads of entries created with --federates-with.
    Federation {
        #[command(subcommand)]
        command: federation::FederationCommand,
    },
    /// Show the server's status.
    Status(AdminArgs),
    /// Inspect the workload inventory agents report: containers and pods,
    /// current and recently stopped.
    Workloads {
        #[command(subcommand)]
        command: WorkloadsCommand,
    },
    /// Flows between workloads: ingest flow logs, list flows with the
    /// identities on both ends, the identity graph, who held an IP when.
    Flows {
        #[command(subcommand)]
        command: flows::FlowsCommand,
    },
    /// Identity policy: groups of workloads by what they are, rules
    /// between them.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Policy groups: which workloads and nodes each holds now.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// The console (browser UI and /api/v1/): login tokens.
    Console {
        #[command(subcommand)]
        command: console::ConsoleCommand,
    },
    /// Fetch this process's X509-SVID from the Workload API.
    Svid {
        #[command(subcommand)]
        command: SvidCommand,
    },
    /// Fetch or validate JWT-SVIDs through the Workload API.
    Jwt {
        #[command(subcommand)]
        command: JwtCommand,
    },
    /// Keep this process's X509-SVID, key, bundle (and a JWT-SVID) in files,
    /// rewritten on every rotation, for software that reads credentials
    /// from disk; optionally reload it after each change.
    Helper(helper::HelperArgs),
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Run the server until interrupted.
    Run(Box<server::ServerArgs>),
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Run the agent until interrupted.
    Run(Box<agent::AgentArgs>),
    /// What the agent found on this node: container runtime, why a source
    /// is degraded, workload counts (from its inventory spool file).
    Status(agent_status::AgentStatusArgs),
    /// List attested agents.
    List(AdminArgs),
    /// Remove an agent's registration: its SVID stops working at once; it
    /// may re-join with a new token.
    Evict {
        /// The agent's SPIFFE ID.
        spiffe_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Ban an agent: its SVID stops working and it may not re-join.
    Ban {
        spiffe_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum EntryCommand {
    /// Create an entry.
    Create(entry::EntryCreateArgs),
    /// List entries.
    List(entry::EntryListArgs),
    /// Show one entry.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an entry; workloads lose the identity within a second.
    Delete {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkloadsCommand {
    /// List workloads (current, and stopped within the retention window).
    List(inventory::ListArgs),
    /// Show one workload in full, with its recorded lifecycle events.
    Show(inventory::ShowArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Generate a single-use join token for a new agent.
    Generate(token::TokenArgs),
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Print the trust bundle.
    Show(bundle::BundleArgs),
}

#[derive(Subcommand, Debug)]
pub enum SvidCommand {
    /// Fetch the caller's X509-SVID(s).
    Fetch(svid::SvidFetchArgs),
}

#[derive(Subcommand, Debug)]
pub enum JwtCommand {
    /// Fetch a JWT-SVID for an audience.
    Fetch(svid::JwtFetchArgs),
    /// Validate a JWT-SVID for an audience.
    Validate(svid::JwtValidateArgs),
}

pub async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server {
            command: ServerCommand::Run(a),
        } => server::run_server(*a).await,
        Command::Agent { command } => match command {
            AgentCommand::Run(a) => agent::run_agent(*a).await,
            AgentCommand::Status(a) => agent_status::run(a),
            AgentCommand::List(a) => agents::agent_list(a).await,
            AgentCommand::Evict { spiffe_id, admin } => {
                agents::agent_evict(admin, &spiffe_id, false).await
            }
            AgentCommand::Ban { spiffe_id, admin } => {
                agents::agent_evict(admin, &spiffe_id, true).await
            }
        },
        Command::Up(a) => up::up(a).await,
        Command::Entry { command } => match command {
            EntryCommand::Create(a) => entry::entry_create(a).await,
            EntryCommand::List(a) => entry::entry_list(a).await,
            EntryCommand::Show { id, admin } => entry::entry_show(admin, &id).await,
            EntryCommand::Delete { id, admin } => entry::entry_delete(admin, &id).await,
        },
        Command::Token {
            command: TokenCommand::Generate(a),
        } => token::token_generate(a).await,
        Command::Bundle {
            command: BundleCommand::Show(a),
        } => bundle::bundle_show(a).await,
        Command::Authority { command } => authority::run(command).await,
        Command::Federation { command } => federation::run(command).await,
        Command::Status(a) => status::status(a).await,
        Command::Workloads { command } => match command {
            WorkloadsCommand::List(a) => inventory::list(a).await,
            WorkloadsCommand::Show(a) => inventory::show(a).await,
        },
        Command::Flows { command } => flows::run(command).await,
        Command::Policy { command } => policy::run(command).await,
        Command::Group { command } => group::run(command).await,
        Command::Console { command } => console::run(command).await,
        Command::Svid {
            command: SvidCommand::Fetch(a),
        } => svid::svid_fetch(a).await,
        Command::Jwt { command } => match command {
            JwtCommand::Fetch(a) => svid::jwt_fetch(a).await,
            JwtCommand::Validate(a) => svid::jwt_validate(a).await,
        },
        Command::Helper(a) => helper::run(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_servers(args: &[&str]) -> Vec<String> {
        let all = ["hallmark", "agent", "run"].iter().chain(args);
        match Cli::try_parse_from(all).map(|c| c.command) {
            Ok(Command::Agent {
                command: AgentCommand::Run(a),
            }) => a.servers,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn agent_servers_repeat_or_separate_with_commas() {
        assert_eq!(
            agent_servers(&["--server", "a:1", "--server", "b:2"]),
            ["a:1", "b:2"]
        );
        assert_eq!(agent_servers(&["--server", "a:1,b:2"]), ["a:1", "b:2"]);
        assert!(agent_servers(&[]).is_empty());
    }

    #[test]
    fn admin_addr_wins_over_an_admin_socket_from_the_environment() {
        let cli = Cli::try_parse_from([
            "hallmark",
            "entry",
            "list",
            "--admin-socket",
            "/run/hallmark/admin.sock",
            "--admin-addr",
            "hallmark-1:8082",
        ])
        .expect("both may be given");
        match cli.command {
            Command::Entry {
                command: EntryCommand::List(a),
            } => assert_eq!(a.conn.admin_addr.as_deref(), Some("hallmark-1:8082")),
            other => panic!("parsed as {other:?}"),
        }
    }
}
