//! A real terminal for end-to-end tests of the dashboard: tmux sessions
//! that run a command, take keys and show their screen.

use std::{
    process::Command,
    time::{Duration, Instant},
};

/// A detached tmux session running one command, killed when dropped.
pub struct Tmux(String);

impl Tmux {
    /// Starts `cmd` in a `width` x `height` terminal; the pane stays after
    /// the command exits, so its last screen can be read.
    pub fn start(cmd: &str, width: u16, height: u16) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("webb-test-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(cmd)
            .status()
            .expect("tmux");
        assert!(ok.success());
        let t = Self(name);
        t.run(&["set-option", "-t", &t.0, "remain-on-exit", "on"]);
        t
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.0])
    }

    /// Sends tmux key names one by one.
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", &self.0, k]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Types text as it is.
    pub fn literal(&self, text: &str) {
        self.run(&["send-keys", "-t", &self.0, "-l", "--", text]);
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Waits up to 10 s until the screen satisfies `ok`.
    pub fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_for_within(what, Duration::from_secs(10), ok)
    }

    pub fn wait_for_within(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: not on screen in {timeout:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}
