//! `sqlraft-core`: see `sqlraft-core --help` and docs/API.md.

use std::process::ExitCode;

use clap::Parser;
use sqlraft_core::CoreError;
use sqlraft_core::cli::{AuthCommand, CertsCommand, Cli, Command, InventoryCommand, validate_run};

/// jemalloc rather than glibc's allocator: 5-7% less CPU per write under 32 writers, at
/// about the same resident memory under steady load. It runs one background thread
/// (crates/core/Cargo.toml, `.cargo/config.toml`) that gives memory freed after a burst
/// back over the next 10-20 s; without it jemalloc kept its peak after a burst
/// (docs/PERFORMANCE.md). mimalloc was as fast but doubled an idle node's memory. A
/// service that links the library chooses its own allocator.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!(
                "sqlraft-core: error: missing subcommand: run, demo, inventory, certs, auth, bench, uninstall or upgrade (see --help)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's first line names the problem; the usage block after it is noise
            // for scripts that read one line.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!("sqlraft-core: error: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sqlraft-core: error: {}", e.one_line());
            ExitCode::from(e.exit_code())
        }
    }
}

fn execute(command: Command) -> Result<(), CoreError> {
    match command {
        Command::Run(args) => {
            let config = validate_run(&args)?;
            if args.exit_with_parent {
                exit_with_parent()?;
            }
            if args.install {
                sqlraft_core::run::check_flag_files(&config)?;
                sqlraft_core::install::install(&args, &config)
            } else if args.supervise {
                runtime()?.block_on(sqlraft_core::install::supervise(&config))
            } else {
                runtime()?.block_on(sqlraft_core::run::run(config))
            }
        }
        Command::Demo(args) => runtime()?.block_on(sqlraft_core::demo::demo(args)),
        Command::Bench(args) => runtime()?.block_on(sqlraft_core::bench::bench(args)),
        Command::Auth(AuthCommand::Init {
            file,
            user,
            password_file,
        }) => {
            let password_file = password_file.unwrap_or_else(|| {
                file.parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("admin.password")
            });
            sqlraft_core::auth::init_file(&file, &user, &password_file)?;
            println!(
                "auth file: {} (user {user}, every permission)",
                file.display()
            );
            println!(
                "password:  in {} (readable by its owner only)",
                password_file.display()
            );
            Ok(())
        }
        Command::Auth(AuthCommand::Hash) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CoreError::Io(format!("cannot read the password: {e}")))?;
            let password = line.trim_end_matches(['\n', '\r']);
            println!("{}", sqlraft_core::auth::hash_password(password)?);
            Ok(())
        }
        Command::Certs(CertsCommand::Init { dir, days }) => sqlraft_core::certs::init(&dir, days),
        Command::Certs(CertsCommand::Issue {
            id,
            fqdn,
            ca_dir,
            out,
            days,
        }) => {
            let id = sqlraft_core::cli::parse_service_id(&id)?;
            let out = out.unwrap_or_else(|| ca_dir.clone());
            sqlraft_core::certs::issue(&id, &fqdn, &ca_dir, &out, days)
        }
        Command::Inventory(InventoryCommand::Check { file }) => {
            sqlraft_core::inventory::check(&file)
        }
        Command::Inventory(InventoryCommand::Plan { file, expand }) => {
            sqlraft_core::inventory::plan(&file, expand)
        }
        Command::Upgrade(args) if args.formats => {
            println!(
                "{} {}",
                sqlraft::format::OLDEST_READABLE_FORMAT,
                sqlraft::format::DATA_FORMAT
            );
            Ok(())
        }
        Command::Upgrade(args) => {
            let root = std::path::absolute(&args.root)
                .map_err(|e| CoreError::Usage(format!("--root {}: {e}", args.root.display())))?;
            sqlraft_core::upgrade::upgrade(&sqlraft_core::upgrade::Upgrade {
                root,
                id: args
                    .id
                    .as_deref()
                    .map(sqlraft_core::cli::parse_service_id)
                    .transpose()?,
                binary: args.binary,
                check: args.check,
            })
        }
        Command::Uninstall(args) => {
            let root = std::path::absolute(&args.root)
                .map_err(|e| CoreError::Usage(format!("--root {}: {e}", args.root.display())))?;
            sqlraft_core::uninstall::uninstall(&sqlraft_core::uninstall::Uninstall {
                id: sqlraft_core::cli::parse_service_id(&args.id)?,
                root,
                purge: args.purge,
                keep_binary: args.keep_binary,
                force: args.force,
                if_removed: args.if_removed,
            })
        }
    }
}

/// Asks the kernel for SIGTERM when the parent ends; if it already has (this process
/// was adopted by init before the request), stops now.
fn exit_with_parent() -> Result<(), CoreError> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| CoreError::Io(format!("cannot follow the parent process: {e}")))?;
    if nix::unistd::getppid() != parent || parent.as_raw() == 1 {
        return Err(CoreError::Failed(
            "the parent process has already ended".into(),
        ));
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CoreError::Io(format!("cannot start the async runtime: {e}")))
}
