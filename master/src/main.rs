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
    /// Quickstart: configure one virtual mail domain, create its first user, print the DNS
    /// records and client settings.
    Setup {
        /// The mail domain, e.g. example.com.
        domain: String,
        /// Create this first user (user@DOMAIN) with a random password, printed once.
        #[arg(long, value_name = "ADDRESS")]
        user: Option<String>,
        /// The server's host name (myhostname; default mail.DOMAIN).
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
        /// Where the mailboxes live: DIR/DOMAIN/USER/Maildir.
        #[arg(long, value_name = "DIR", default_value = "/var/vmail")]
        mail_dir: PathBuf,
        /// Overwrite an edited main.cf (kept as main.cf.bak) or reset an existing user's password.
        #[arg(long)]
        force: bool,
    },
    /// Log reports (pflogsumm).
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Write the man pages (rmaster(8) and its commands, rpost(5)) into DIR.
    #[command(hide = true)]
    GenMan { dir: PathBuf },
    /// Write bash and zsh completions for rmaster into DIR.
    #[command(hide = true)]
    GenCompletions { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Count received, delivered, forwarded, deferred, bounced, rejected, held and discarded
    /// mail, bytes, top senders, recipients and domains, and reject reasons.
    Summary {
        /// The maillog to read (default: standard input; "-" too).
        #[arg(conflicts_with = "journal")]
        file: Option<PathBuf>,
        /// Read rpost's lines from the systemd journal (journalctl -u rpost).
        #[arg(long)]
        journal: bool,
        /// How many entries each top list shows.
        #[arg(long, default_value_t = 10)]
        top: usize,
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
        Command::GenMan { dir } => return gen_man(&dir),
        Command::GenCompletions { dir } => return gen_completions(&dir),
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
                Command::Pw { .. } | Command::Auth { .. } | Command::GenMan { .. } | Command::GenCompletions { .. } => {
                    unreachable!("handled above")
                }
                Command::Setup { domain, user, hostname, mail_dir, force } => {
                    let args = master::setup::SetupArgs { domain, user, hostname, mail_dir, force };
                    master::setup::run(&dir, &args).map(print_ok)
                }
                Command::Log { command: LogCommand::Summary { file, journal, top } } => log_summary(file, journal, top),
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

/// Reads the log (a file, standard input or the journal) and prints the summary.
fn log_summary(file: Option<PathBuf>, journal: bool, top: usize) -> Result<ExitCode, CommandError> {
    use master::logsummary::Summary;
    let io = |what: String| move |source| CommandError::Io { what, source };
    let summary = if journal {
        let mut child = std::process::Command::new("journalctl")
            .args(["--quiet", "--no-pager", "--output=short", "--unit=rpost.service"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(io("journalctl".into()))?;
        let out = child.stdout.take().expect("piped");
        let s = Summary::read(std::io::BufReader::new(out)).map_err(io("journalctl".into()))?;
        let status = child.wait().map_err(io("journalctl".into()))?;
        if !status.success() {
            return Err(CommandError::Other(format!("journalctl failed: {status}")));
        }
        s
    } else {
        match file {
            Some(f) if f.as_os_str() != "-" => {
                let what = f.display().to_string();
                let r = std::fs::File::open(&f).map_err(io(what.clone()))?;
                Summary::read(std::io::BufReader::new(r)).map_err(io(what))?
            }
            _ => Summary::read(std::io::stdin().lock()).map_err(io("standard input".into()))?,
        }
    };
    print!("{}", summary.render(top));
    Ok(ExitCode::SUCCESS)
}

/// rmaster(8), one page per command (rmaster-queue(8), ...), and rpost(5).
fn gen_man(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    fn walk(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, dir)?;
        }
        clap_mangen::Man::new(cmd).section("8").manual("rpost").generate_to(dir).map(|_| ())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| walk(cmd, dir))
        .and_then(|()| std::fs::write(dir.join("rpost.5"), master::manpage::rpost_5(env!("CARGO_PKG_VERSION"))));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmaster: fatal: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// bash (rmaster) and zsh (_rmaster) completion scripts.
fn gen_completions(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        for shell in [Shell::Bash, Shell::Zsh] {
            clap_complete::generate_to(shell, &mut Cli::command(), "rmaster", dir)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmaster: fatal: {}: {e}", dir.display());
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
