//! `sigil`: parse the command line, set up logging, hand over to the library.

use clap::Parser;
use sigil::cli::{Cli, resolve_config, run};
use sigil::config::LogFormat;

fn main() {
    tame_malloc();
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        sigil::cli::Command::Serve { .. } | sigil::cli::Command::Probe { .. }
    ) {
        default_sigpipe();
    }
    let config = match resolve_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sigil: configuration error: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG")
        // sqlx reports PostgreSQL's NOTICEs (such as "relation _sqlx_migrations already exists,
        // skipping" on every start) at info: noise, not news.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colour only on a terminal: a log written to a file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sigil: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(cli, config)).unwrap_or_else(|e| {
        eprintln!("sigil: {e}");
        1
    });
    std::process::exit(code);
}

/// A command's output piped into `head` ends the process quietly, as other Unix tools do, instead
/// of panicking on the closed pipe. Not for `serve`: a client closing its socket must be an error
/// to handle, never a signal that kills the server.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// glibc gives every thread its own malloc arena, which left an idle server at ~60 MB RSS; two
/// arenas keep it near a few MB with no measurable cost at this core count.
///
/// glibc also raises its mmap threshold to the size of any mmapped block freed (up to 32 MiB):
/// after the first password check freed argon2's 19 MiB block, later blocks came from the heap
/// and stayed resident, ~20 MB per failed sign-in, never returned. A fixed threshold (which
/// turns the dynamic raise off) keeps every block over 1 MiB in its own mapping, unmapped when
/// freed. Below 1 MiB nothing changes: token requests allocate far less.
#[allow(unsafe_code)]
fn tame_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}
