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
    // The handlers are installed here, before this returns: a signal that arrives right
    // after (a launcher stopping the command as soon as it reports ready) is caught,
    // where handlers installed later by the watcher thread would let it kill the process.
    let mut signals = {
        let _in_runtime = runtime.enter();
        Signals::install().context("installing the SIGINT/SIGTERM handlers")?
    };
    std::thread::Builder::new()
        .name("wgsd-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                signals.next().await;
                on_first();
                signals.next().await;
                eprintln!("{second}");
                std::process::exit(130);
            })
        })
        .context("starting the signal watcher")?;
    Ok(())
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(&mut self) {
        // Without a ctrl-c handler (an error), wait forever rather than stop.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
