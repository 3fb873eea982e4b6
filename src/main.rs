use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use ticketing::{
    app::Application,
    config::{Config, RunMode},
    db,
    service::reconcile,
    telemetry,
};

const USAGE: &str = "usage: ticketing [serve|migrate|reconcile] [--mode all|http|worker]
                 [--event ID] [--organizer ID]

  serve      run the HTTP server and/or the job workers (default)
  migrate    create the database if needed, apply migrations, and exit
  reconcile  check the money and seat invariants (of one event or organizer, or all);
             prints one line per mismatch or stuck refund/payout, exits 1 on a mismatch
  --mode     what `serve` runs (overrides RUN_MODE; default all)";

fn main() -> ExitCode {
    limit_malloc_retention();
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ticketing: {e}");
            return ExitCode::from(2);
        }
    };
    let mut command = "serve".to_owned();
    let mut scope = reconcile::Scope::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "serve" | "migrate" | "reconcile" => command = arg,
            "--event" | "--organizer" => match args.next().map(|v| v.parse::<uuid::Uuid>()) {
                Some(Ok(id)) if arg == "--event" => scope.event_id = Some(id),
                Some(Ok(id)) => scope.organizer_id = Some(id),
                _ => {
                    eprintln!("{arg} needs a UUID\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--mode" => match args.next().map(|m| m.parse::<RunMode>()) {
                Some(Ok(mode)) => config.run_mode = mode,
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    telemetry::init_tracing(config.log_json);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ticketing: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match command.as_str() {
            "migrate" => {
                db::connect_and_migrate(config.database_url(), 1, std::time::Duration::from_secs(5))
                    .await
                    .map(|_| tracing::info!("migrations applied"))
            }
            "reconcile" => {
                let db = db::connect_existing(config.database_url()).await?;
                let report = reconcile::check(&db, scope).await?;
                for f in report.mismatches.iter().chain(&report.stuck) {
                    println!("{}", reconcile::line(f));
                }
                println!(
                    "reconcile: {} mismatches, {} stuck",
                    report.mismatches.len(),
                    report.stuck.len()
                );
                if report.is_consistent() {
                    Ok(())
                } else {
                    return Ok(ExitCode::FAILURE);
                }
            }
            _ => {
                let app = Application::build(config).await?;
                if let Some(port) = app.port() {
                    tracing::info!(port, "listening");
                }
                let token = CancellationToken::new();
                tokio::spawn(shutdown_on_signal(token.clone()));
                app.run_until_stopped(token).await
            }
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("ticketing: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on SIGINT (Ctrl-C) or SIGTERM (container stop).
async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("signal received");
    token.cancel();
}

/// glibc raises its mmap threshold after large blocks are freed, so argon2's 19 MiB blocks
/// end up in heap arenas that are never returned, and the process keeps ~1 GiB after a burst
/// of signups. A fixed threshold keeps large blocks mmap'd (returned on free), and fewer
/// arenas bound fragmentation across the many runtime threads.
fn limit_malloc_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called first thing, before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
