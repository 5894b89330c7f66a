//! `send`'s progress bar on a terminal: files done of total, bytes, rate and ETA, redrawn from
//! the upload's live counters (indicatif). Nothing is drawn when stderr is not a terminal.

use crate::delivery::Progress;
use crate::lifecycle::WatchUpload;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const REDRAW: Duration = Duration::from_millis(100);

/// The bars of one `send` (one per upload attempt); `finish` waits until the last is drawn.
#[derive(Clone, Default)]
pub struct Bars(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Bars {
    pub fn watcher(&self) -> WatchUpload {
        let bars = self.clone();
        Box::new(move |progress: &Arc<Progress>| {
            let progress = progress.clone();
            let drawing = std::thread::spawn(move || draw(progress));
            bars.0.lock().unwrap_or_else(|p| p.into_inner()).push(drawing);
        })
    }

    /// Waits for every bar to draw its final state (the uploads have ended).
    pub fn finish(&self) {
        for drawing in std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = drawing.join();
        }
    }
}

fn draw(progress: Arc<Progress>) {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        // Only this thread holds the counters once the upload has ended.
        let ended = Arc::strong_count(&progress) == 1;
        if !ended && progress.files_total.load(Ordering::Relaxed) == 0 {
            // Not started: nothing to show yet.
            std::thread::sleep(REDRAW);
            continue;
        }
        bar.set_length(progress.bytes_total.load(Ordering::Relaxed));
        bar.set_position(progress.bytes_sent.load(Ordering::Relaxed));
        let (done, total) = (progress.files_done.load(Ordering::Relaxed), progress.files_total.load(Ordering::Relaxed));
        bar.set_message(format!("{done}/{total} files"));
        if ended {
            bar.finish();
            // The final state stays on its own line.
            eprintln!();
            return;
        }
        bar.tick();
        std::thread::sleep(REDRAW);
    }
}
