//! rmaster command line; see the library documentation for what each verb does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use master::commands::{self, CommandError};

mod authcmd;
use master::conf::ConfArgs;

#[derive(Debug, Parser)]
#[command(name = "rmaster", version, about = "rpost mail system supervisor and administration")]
struct Cli {
    /// Configuration directory (default: $RPOST_CONFIG or /etc/rpost).
    #[arg(short = 'c', long = "config", global = true, value_name = "DIR")]
    config: Option<PathBuf>,
    /// Log debug lines too.
    #[arg(short = 'v', long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the mail system (in the background unless --foreground).
    Start {
        /// Stay in the foreground (systemd, containers, tests).
        #[arg(long)]
        foreground: bool,
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Stop the mail system: graceful first, hard after master_stop_timeout.
    Stop,
    /// Re-read main.cf and master.cf without dropping connections.
    Reload,
    /// Report whether the master runs, and its services and processes.
    Status,
    /// Validate the configuration and daemons; create or repair the queue directory; create
    /// a self-signed TLS certificate when a service wants TLS and none is configured.
    Check,
    /// Inspect the mail queue (postqueue -p, postcat -q).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Query and build lookup tables (postmap, postalias).
    Map {
        #[command(subcommand)]
        command: MapCommand,
    },
    /// Show or edit main.cf parameters, as postconf(1).
    #[command(disable_help_flag = true)]
    Conf {
        /// Print help (-h means "values only", as in postconf).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Only parameters set explicitly in main.cf.
        #[arg(short = 'n')]
        non_default: bool,
        /// Default values.
        #[arg(short = 'd')]
        defaults: bool,
        /// Expand $name references.
        #[arg(short = 'x')]
        expand: bool,
        /// Print values only, without "name =".
        #[arg(short = 'h')]
        hide_name: bool,
        /// Show master.cf entries.
        #[arg(short = 'M')]
        master: bool,
        /// Edit main.cf: arguments are name=value.
        #[arg(short = 'e')]
        edit: bool,
        /// Remove the named parameters from main.cf.
        #[arg(short = 'X')]
        remove: bool,
        /// Comment out the named parameters in main.cf.
        #[arg(short = '#')]
        comment: bool,
        /// Parameter names (or name=value with -e).
        names: Vec<String>,
    },
    /// Generate or verify a password hash, as doveadm pw.
    Pw {
        /// Scheme (SHA512-CRYPT, BLF-CRYPT, ARGON2ID, CRAM-MD5, PLAIN, ...; default CRYPT).
        #[arg(short = 's', value_name = "SCHEME")]
        scheme: Option<String>,
        /// The password (else prompted twice on a terminal, or one line of standard input).
        #[arg(short = 'p', value_name = "PASS")]
        password: Option<String>,
        /// Verify the password against this {SCHEME}hash instead.
        #[arg(short = 't', value_name = "HASH")]
        test: Option<String>,
        /// List the supported schemes.
        #[arg(short = 'l')]
        list: bool,
    },
    /// Authentication tools, as doveadm auth.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Log in with PLAIN through authd's client socket, as doveadm auth test.
    Test {
        /// The auth client socket (default: private/auth in queue_directory).
        #[arg(short = 'a', value_name = "SOCKET")]
        socket: Option<PathBuf>,
        /// Extra request fields, e.g. -x service=smtp -x rip=192.0.2.1 -x secured.
        #[arg(short = 'x', value_name = "KEY=VALUE")]
        info: Vec<String>,
        user: String,
        /// The password (else prompted without echo, or read from standard input).
        password: Option<String>,
    },
    /// Look a user up in the userdb through `authd userdb`, as doveadm user.
    User {
        /// The auth-userdb socket (default: private/$auth_socket_path in queue_directory).
        #[arg(short = 'a', value_name = "SOCKET")]
        socket: Option<PathBuf>,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List queued messages (postqueue -p).
    List {
        /// One JSON array instead of the postqueue layout.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope and content (postcat -q).
    Show { id: String },
    /// Retry every deferred message now (postqueue -f).
    Flush,
    /// Put messages on hold (postsuper -h); IDs or ALL.
    Hold {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages (postsuper -H); IDs or ALL.
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete messages (postsuper -d); IDs or ALL.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Requeue messages as new (postsuper -r); IDs or ALL.
    Requeue {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Recipients per domain by age (qshape); optionally one of incoming, active, deferred, hold.
    Shape { queue: Option<String> },
}

#[derive(Debug, Subcommand)]
enum MapCommand {
    /// Look keys up in a table (postmap -q); exit status 1 if any is missing.
    Query {
        /// The table, e.g. hash:/etc/rpost/virtual.
        table: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Build the indexed FILE.db of a hash: or btree: table (postmap, postalias).
    Build {
        /// Read the file as aliases(5) ("name: value, value"), as postalias does.
        #[arg(long)]
        aliases: bool,
        /// The source file, optionally as TYPE:FILE.
        file: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli
        .config
        .or_else(|| std::env::var_os("RPOST_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/rpost"));
    let result = match cli.command {
        Command::Pw { scheme, password, test, list } => {
            return authcmd::pw(scheme.as_deref(), password, test.as_deref(), list);
        }
        Command::Auth { command: AuthCommand::Test { socket, info, user, password } } => {
            return authcmd::auth_test(&dir, socket.as_deref(), &info, &user, password);
        }
        Command::Auth { command: AuthCommand::User { socket, user } } => {
            return authcmd::auth_user(&dir, socket.as_deref(), &user);
        }
        Command::Start { foreground: true, detached } => {
            commands::start_foreground(&dir, detached, cli.verbose).map(|()| ExitCode::SUCCESS)
        }
        command => {
            rpost_log::init_cli("rmaster", cli.verbose);
            match command {
                Command::Start { .. } => commands::start_background(&dir, cli.verbose).map(|()| ExitCode::SUCCESS),
                Command::Stop => commands::stop(&dir).map(|()| ExitCode::SUCCESS),
                Command::Reload => commands::reload(&dir).map(|()| ExitCode::SUCCESS),
                Command::Status => commands::status(&dir).map(|()| ExitCode::SUCCESS),
                Command::Check => commands::check(&dir),
                Command::Queue { command } => queue(&dir, command),
                Command::Map { command: MapCommand::Query { table, keys } } => master::admin::map_query(&table, &keys)
                    .map(|(out, all)| {
                        print!("{out}");
                        if all { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                    }),
                Command::Map { command: MapCommand::Build { aliases, file } } => {
                    master::admin::map_build(&file, aliases).map(|()| ExitCode::SUCCESS)
                }
                Command::Pw { .. } | Command::Auth { .. } => unreachable!("handled above"),
                Command::Conf {
                    help: _,
                    non_default,
                    defaults,
                    expand,
                    hide_name,
                    master,
                    edit,
                    remove,
                    comment,
                    names,
                } => {
                    let args =
                        ConfArgs { non_default, defaults, expand, hide_name, master, edit, remove, comment, names };
                    master::conf::run(&dir, &args).map(|out| {
                        print!("{out}");
                        ExitCode::SUCCESS
                    })
                }
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

fn print_ok(out: String) -> ExitCode {
    print!("{out}");
    ExitCode::SUCCESS
}

fn queue(dir: &std::path::Path, command: QueueCommand) -> Result<ExitCode, CommandError> {
    use master::admin;
    match command {
        QueueCommand::List { json } => admin::queue_list(dir, json).map(print_ok),
        QueueCommand::Show { id } => admin::queue_show(dir, &id).map(print_ok),
        QueueCommand::Flush => admin::queue_flush(dir).map(|()| ExitCode::SUCCESS),
        QueueCommand::Hold { ids } => admin::queue_hold(dir, &ids).map(print_err_ok),
        QueueCommand::Release { ids } => admin::queue_release(dir, &ids).map(print_err_ok),
        QueueCommand::Delete { ids } => admin::queue_delete(dir, &ids).map(print_err_ok),
        QueueCommand::Requeue { ids } => admin::queue_requeue(dir, &ids).map(print_err_ok),
        QueueCommand::Shape { queue } => admin::queue_shape(dir, queue.as_deref()).map(print_ok),
    }
}

/// postsuper reports its counts on stderr.
fn print_err_ok(out: String) -> ExitCode {
    eprint!("{out}");
    ExitCode::SUCCESS
}

fn report(e: &CommandError) {
    eprintln!("rmaster: fatal: {e}");
}
