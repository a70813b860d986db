//! SIGINT/SIGTERM (Ctrl-C) for the long-running commands: the first signal asks the
//! command to stop cleanly (`wgsd serve` finishes in-flight requests, `wgsd generate`
//! stops between denoising steps and writes nothing); a second one exits at once.

use anyhow::Context;

/// Calls `on_first` on the first SIGINT/SIGTERM (from a watcher thread); on a second
/// signal prints `second` and exits with 130.
pub fn on_interrupt(
    on_first: impl FnOnce() + Send + 'static,
    second: &'static str,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    std::thread::Builder::new()
        .name("wgsd-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                if next_signal().await.is_err() {
                    return;
                }
                on_first();
                if next_signal().await.is_ok() {
                    eprintln!("{second}");
                    std::process::exit(130);
                }
            })
        })
        .context("starting the signal watcher")?;
    Ok(())
}

#[cfg(unix)]
async fn next_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn next_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
