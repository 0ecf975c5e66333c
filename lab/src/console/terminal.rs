//! The terminal as the console leaves it: raw mode, the alternate screen and a hidden cursor
//! while it runs, and everything restored however it ends: `q`, Ctrl-C, SIGTERM, an error,
//! or a panic (the panic hook restores the terminal before the message is printed).

use std::io::Write;

use ratatui_crossterm::crossterm::{cursor, event, execute, terminal};
use tokio::sync::mpsc;

/// While it lives, the terminal is the console's.
pub struct Guard(());

impl Guard {
    pub fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode()?;
        let guard = Guard(());
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            terminal::Clear(terminal::ClearType::All),
            cursor::Hide
        )?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        Ok(guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
        let _ = std::panic::take_hook();
    }
}

/// Puts the terminal back: cooked mode, main screen, cursor shown. Safe to call twice.
pub fn restore() {
    let mut out = std::io::stdout();
    let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
    let _ = out.flush();
}

/// Reads terminal events on a thread of their own (reading blocks) and hands them over.
pub fn spawn_input() -> mpsc::UnboundedReceiver<event::Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || {
            while let Ok(event) = event::read() {
                if tx.send(event).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the input thread");
    rx
}

/// SIGTERM, SIGINT and SIGHUP, as one stream: each means "quit cleanly".
pub fn quit_signals() -> std::io::Result<mpsc::UnboundedReceiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::unbounded_channel();
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}
